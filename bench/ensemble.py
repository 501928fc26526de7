"""What a seed ensemble costs when it serves, against the one model it is built around: both are
exported as bundles (`tagstream export`, with ``--members`` for the ensemble) and run through the
serving tagger (ONNX Runtime) on the same labelled texts in one run, fp32 and static int8: test
micro-F1, events/s, and each ratio to the one model's fp32.

    python bench/ensemble.py [--checkpoint A --members B C --held-out dev.jsonl --test test.jsonl]
                             [--label en] [--threads 2] [--batch-size 64] [--repeats 3] [--out bench/results]

Without --checkpoint it reads the finished runs of bench/accuracy.py's en row "MiniLM-L6, sub-token
units" (seed 13 the one model, 14 and 15 its members) and scores ae-110k's test split. Writes
bench/results/ensemble-<label>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.accuracy import CACHE, slug, split_files  # noqa: E402
from bench.common import machine  # noqa: E402
from bench.inference import measure  # noqa: E402
from export.bundle import export_bundle  # noqa: E402
from export.config import ExportConfig, ExportError  # noqa: E402
from export.retrain import bundle_scores, tagged_spans  # noqa: E402
from model.data import DataError, load_examples  # noqa: E402
from stream.tagging.tagger import Tagger  # noqa: E402

DEFAULT_ROW = "MiniLM-L6, sub-token units"


def default_inputs() -> tuple[str, list[str], str, str]:
    """The accuracy bench's en sub-token runs: checkpoint, members, held-out and test files."""
    runs = [CACHE / "en" / slug(DEFAULT_ROW) / f"seed{seed}" / "ck" for seed in (13, 14, 15)]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        sys.exit(f"no checkpoint at {', '.join(missing)}: run `python bench/accuracy.py --data en --rows "
                 f"\"{DEFAULT_ROW}\"` first, or give --checkpoint and --members")
    files = split_files("en")
    return str(runs[0]), [str(r) for r in runs[1:]], str(files["dev"]), str(files["test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the one model (default: the accuracy bench's en seed 13)")
    parser.add_argument("--members", nargs="+", default=[], help="the ensemble's other members")
    parser.add_argument("--held-out", help="labelled texts for export parity and int8 calibration")
    parser.add_argument("--test", help="labelled texts scored and timed")
    parser.add_argument("--label", default="en", help="names the results file: ensemble-LABEL.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    given = [args.checkpoint, args.members, args.held_out, args.test]
    if any(given) and not all(given):
        parser.error("--checkpoint, --members, --held-out and --test go together (or none: the default runs)")
    checkpoint, members, held_out, test = ((args.checkpoint, args.members, args.held_out, args.test)
                                           if args.checkpoint else default_inputs())
    try:
        examples = load_examples([test])
    except DataError as err:
        sys.exit(str(err))
    texts = [e.text for e in examples]
    work = Path(tempfile.mkdtemp(prefix="tagstream-ensemble-"))
    rows = []
    for name, extra in (("one model", ()), (f"ensemble of {1 + len(members)}", tuple(members))):
        try:
            bundle = export_bundle(ExportConfig(checkpoint=checkpoint, members=extra, out=str(work / slug(name)),
                                                held_out=(held_out,), int8=True),
                                   log=lambda line: print(line, file=sys.stderr))
        except (DataError, ExportError) as err:
            sys.exit(f"{name}: {err}")
        for variant in ("fp32", "int8"):
            tagger = Tagger.load(bundle, variant=variant, device="cpu", threads=args.threads,
                                 batch_size=args.batch_size)
            row = measure(f"{name}, {variant}", tagger.tag_texts, texts, args.batch_size, 2, args.repeats)
            row["test_f1"] = round(bundle_scores(tagger, examples, tagged_spans(tagger, examples))["micro"]["f1"], 4)
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["throughput_vs_one_model_fp32"] = round(row["events_per_second"] / base["events_per_second"], 3)
        row["f1_change_vs_one_model_fp32"] = round(row["test_f1"] - base["test_f1"], 4)
    result = {"benchmark": "ensemble", "machine": machine(threads=args.threads), "checkpoint": checkpoint,
              "members": members, "held_out": held_out, "test": test, "texts": len(texts), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = out / f"ensemble-{slug(args.label)}.json"
    written.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{'served as':<28}{'test F1':>9}{'events/s':>10}{'p99 ms':>9}{'F1 change':>11}{'throughput':>12}")
    for row in rows:
        print(f"{row['name']:<28}{row['test_f1']:>9.3f}{row['events_per_second']:>10.1f}"
              f"{row['per_call']['p99_ms']:>9.1f}{row['f1_change_vs_one_model_fp32']:>+11.3f}"
              f"{row['throughput_vs_one_model_fp32']:>11.2f}x")
    print(f"CPU: {result['machine']['cpu']}; wrote {written}")


if __name__ == "__main__":
    main()
