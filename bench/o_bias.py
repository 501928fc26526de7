"""The O bias (`model.decision`), measured on rows of bench/accuracy.py: for each finished run of a
row (one model, or a row's ensemble of members), the bias is chosen on dev, then test is scored with
and without it. No training: it reads the accuracy bench's cache (bench/.cache/accuracy).

    python bench/o_bias.py --data zh|en --rows NAME ... [--seeds 13 14 15]

Writes bench/results/o-bias-<data>.json/.md (rows measured earlier are kept)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import accuracy  # noqa: E402  (its rows, cache and data files)


def measure(data: str, done: dict) -> dict:
    """One finished run: its checkpoint (or members' ensemble) with the bias chosen on dev."""
    from model.data import load_examples
    from model.decision import choose_o_bias, scores_by_bias

    _, checkpoint = accuracy.loaded(accuracy.member_folders(Path(done["job"]["out"]),
                                                           done["job"]["row"].get("members", 1)))
    dev, test = (load_examples([accuracy.split_files(data)[s]]) for s in ("dev", "test"))
    choice = choose_o_bias(checkpoint.model, checkpoint.encoder, checkpoint.labels, dev)
    test_scores = scores_by_bias(checkpoint.model, checkpoint.encoder, checkpoint.labels, test,
                                 sorted({0.0, choice.bias}))
    before, after = test_scores[0.0].micro, test_scores[choice.bias].micro
    return {"seed": done["job"]["seed"], **choice.to_json(),
            "test_before": {"f1": round(before.f1, 4), "precision": round(before.precision, 4),
                            "recall": round(before.recall, 4)},
            "test_after": {"f1": round(after.f1, 4), "precision": round(after.precision, 4),
                           "recall": round(after.recall, 4)}}


def _mean(runs: list[dict], key: str, part: str = "f1") -> str:
    values = [r[key][part] if isinstance(r[key], dict) else r[key] for r in runs]
    return f"{statistics.fmean(values):.3f}"


def markdown(data: str, rows: dict, cpu: str) -> str:
    lines = [f"O bias chosen on dev ({data}, {cpu}); test micro-F1 mean over the seeds, without and with it.", "",
             "| row | seeds | biases chosen | dev F1 without / with | test F1 without | test F1 with | "
             "test P / R without | test P / R with |", "|---|---|---|---|---:|---:|---|---|"]
    for name, runs in rows.items():
        lines.append(f"| {name} | {len(runs)} | {', '.join(str(r['o_bias']) for r in runs)} | "
                     f"{_mean(runs, 'held_out_f1_before')} / {_mean(runs, 'held_out_f1_after')} | "
                     f"{_mean(runs, 'test_before')} | **{_mean(runs, 'test_after')}** | "
                     f"{_mean(runs, 'test_before', 'precision')} / {_mean(runs, 'test_before', 'recall')} | "
                     f"{_mean(runs, 'test_after', 'precision')} / {_mean(runs, 'test_after', 'recall')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(accuracy.DATA), required=True)
    parser.add_argument("--rows", nargs="+", metavar="NAME", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", help="default: every finished seed of the row")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    names = [r["name"] for r in accuracy.ROWS[args.data]]
    unknown = sorted(set(args.rows) - set(names))
    if unknown:
        parser.error(f"unknown rows {unknown}; the {args.data} rows are: {names}")
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    file = out / f"o-bias-{args.data}.json"
    report = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {"data": args.data, "rows": {}}
    report["machine"] = accuracy.machine(threads=1)
    finished = accuracy.finished(args.data)
    for name in args.rows:
        runs = [r for r in finished if r["job"]["row"]["name"] == name and (not args.seeds or r["job"]["seed"]
                                                                             in args.seeds)]
        if not runs:
            sys.exit(f"{name!r}: no finished run in {accuracy.CACHE / args.data} (run bench/accuracy.py first)")
        report["rows"][name] = [measure(args.data, r) for r in sorted(runs, key=lambda r: r["job"]["seed"])]
        for r in report["rows"][name]:
            print(f"{name} seed {r['seed']}: bias {r['o_bias']}, dev {r['held_out_f1_before']} -> "
                  f"{r['held_out_f1_after']}, test {r['test_before']['f1']} -> {r['test_after']['f1']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    text = markdown(args.data, report["rows"], report["machine"]["cpu"])
    (out / f"o-bias-{args.data}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
