"""Weak labels from dictionaries: how far do they carry a tagger, and does the partial-annotation
CRF (unmatched positions unknown) beat treating unmatched positions as O?

    python bench/weak_labels.py --data zh|en [--seeds 13] [--jobs 2]

Rows: dictionary matching alone (no model), a model trained on autolabelled titles only (0 gold),
200 gold titles alone, 200 gold + the autolabelled rest of train (gold labels hidden) with unmatched
positions read as O, as unknown (the partial-annotation CRF), as unknown with P(O) estimated on
the gold titles and as unknown weighed by the posteriors of a teacher trained on the 200 gold titles,
and all gold. zh: ../shared/data/ecommerce-ner; its gazetteers are the dictionary
(brand -> HP, product -> HC); for the mixed rows the 200 gold titles' entities join it and the forms
those titles show to be mostly wrong leave it (`autolabel --check-against`); a 2-layer/128
BERT-CRF from scratch with the gazetteers as input lexicon. en: ../shared/data/ae-110k has no gazetteer, so the dictionary is the
attribute values of the 200 gold titles (what a team that labelled 200 titles has); MiniLM-L6.
Runs are cached (bench/.cache/weak). Writes bench/results/weak_labels-<data>.json/.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.active_learning import cached, gazetteers, split_files, test_scores, train_config  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "weak"
GOLD = 200
# (row, gold titles (0, GOLD or None = all), weak remainder, how unmatched weak positions are read)
ROWS = (("autolabelled train only, unmatched = O", 0, True, "o"),
        ("autolabelled train only, unmatched unknown (partial CRF)", 0, True, "unknown"),
        ("200 gold", GOLD, False, None),
        ("200 gold + autolabelled rest, unmatched = O", GOLD, True, "o"),
        ("200 gold + autolabelled rest, unmatched unknown (partial CRF)", GOLD, True, "unknown"),
        ("all gold", None, False, None),
        ("200 gold + autolabelled rest, unmatched unknown, P(O) cross-fitted on gold (partial CRF + prior)", GOLD,
         True, "prior"),
        ("200 gold + autolabelled rest, unmatched unknown, weighed by the 200-gold model (partial CRF + teacher)",
         GOLD, True, "teacher"),
        # The control for the row above: the same teacher, its tags taken as given (self-training).
        ("200 gold + autolabelled rest, unmatched = the 200-gold model's tags (no partial CRF)", GOLD, True,
         "teacher-tags"))


def dictionary(data: str, seed_examples, with_gold: bool,
               confirmed: bool = False) -> tuple[dict[str, list[str]], dict | None]:
    """The forms autolabel matches, and what checking them against the gold titles dropped: the
    gold titles' entities (zh: plus the gazetteers) minus the forms those titles show to be mostly
    wrong (`check_forms`: "Men" is a value in one title and plain text in ten others). zh without
    gold: the gazetteers alone. en has no gazetteer, so its dictionary is the gold titles' values.
    ``confirmed``: only the forms the gold titles met and found mostly right (`--confirmed-only`)."""
    from model.samples import entity_strings, merge_forms
    from stream.tagging.autolabel import check_forms
    from stream.tagging.lexicon import read_specs

    own = entity_strings(seed_examples)
    if data == "zh" and not with_gold:
        return read_specs(gazetteers()), None
    base = read_specs(gazetteers()) if data == "zh" else {}
    return check_forms(merge_forms(base, own), [(e.text, e.spans) for e in seed_examples], confirmed_only=confirmed)


def weak_records(data: str, seed: int, with_gold: bool = True, confirmed: bool = False) -> tuple[list, list, dict]:
    """(the seed's gold examples, the autolabelled rest as partial examples, autolabel report);
    without gold, every training title is autolabelled from the gazetteers alone."""
    from model.data import Example, load_examples
    from stream.tagging.autolabel import AutolabelReport, autolabel, lexicon_of

    examples = load_examples([split_files(data)["train"]])
    rng = random.Random(seed)
    gold_ids = set(e.id for e in rng.sample(examples, GOLD))
    gold = [e for e in examples if e.id in gold_ids]
    rest = [e for e in examples if e.id not in gold_ids or (not with_gold and data == "zh")]
    report = AutolabelReport()
    forms, checked = dictionary(data, gold, with_gold, confirmed)
    spans = autolabel([e.text for e in rest], lexicon_of(forms), report=report)
    weak = [Example(e.id, e.text, tuple(s), partial=True) for e, s in zip(rest, spans)]
    return gold, weak, {**report.to_json(), "checked": checked}


def o_prior(data: str, gold, confirmed: bool = False) -> float:
    """P(O) at unmatched positions, cross-fitted on the gold titles with the same dictionary recipe
    (what `autolabel --check-against` prints for `train --weak-o-prior`)."""
    from stream.tagging.autolabel import unmatched_o_share
    from stream.tagging.lexicon import read_specs

    base = read_specs(gazetteers()) if data == "zh" else {}
    return unmatched_o_share(base, [(e.text, e.spans) for e in gold], add_gold_forms=True, confirmed_only=confirmed)


def run_row(job: dict) -> dict:
    import torch

    record = Path(job["out"]) / "row.json"
    done = cached(record, job)
    if done:
        return done
    from dataclasses import replace

    from model.data import load_examples, write_jsonl
    from model.train import train

    torch.set_num_threads(1)
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    confirmed = job.get("dictionary") == "confirmed by gold"
    gold, weak, autolabelled = weak_records(job["data"], job["seed"], with_gold=job["gold"] != 0, confirmed=confirmed)
    if job["gold"] is None:
        gold = load_examples([split_files(job["data"])["train"]])
    train_file, weak_file = out / "gold.jsonl", out / "weak.jsonl"
    write_jsonl(train_file, gold if job["gold"] != 0 else weak)
    write_jsonl(weak_file, weak)
    config = train_config(job["data"], train_file, out / "checkpoint", job["seed"], job["budget"])
    started = time.process_time()
    teacher, unmatched = None, job["unmatched"]
    if unmatched in ("teacher", "teacher-tags"):   # the "200 gold" row's model, trained here (its CPU time counts)
        teacher = str(out / "teacher")
        train(replace(config, out=teacher), log=lambda line: None)
    if unmatched == "teacher-tags":
        write_jsonl(weak_file, with_teacher_tags(teacher, weak))
        teacher, unmatched = None, "o"
    if job["weak"] and job["gold"]:
        config = replace(config, weak=(str(weak_file),), weak_unmatched=unmatched, weak_teacher=teacher,
                         weak_weight=job.get("weak_weight", 1.0),
                         weak_o_prior=o_prior(job["data"], gold, confirmed) if job["unmatched"] == "prior" else None)
    elif job["weak"]:
        config = replace(config, weak_unmatched=job["unmatched"])
    result = train(config, log=lambda line: None)
    scores, _ = test_scores(job["data"], out / "checkpoint")
    done = {"job": job, "test_f1": scores.micro.f1, "dev_f1": result.dev.micro.f1, "test": scores.to_json(),
            "cpu_seconds": round(time.process_time() - started, 1), "epochs": len(result.epochs),
            "autolabel": autolabelled if job["weak"] else None}
    record.write_text(json.dumps(done, indent=1), encoding="utf-8")
    for checkpoint in ("checkpoint", "teacher"):
        (out / checkpoint / "model.pt").unlink(missing_ok=True)
    print(f"[{job['data']} seed {job['seed']}] {job['name']}: test F1 {done['test_f1']:.4f} ({done['cpu_seconds']} CPU-s)",
          file=sys.stderr, flush=True)
    return done


def with_teacher_tags(teacher: str, weak: list) -> list:
    """The weak titles with the teacher's spans added wherever they overlap no dictionary span."""
    from dataclasses import replace

    from model.train import load_checkpoint, predict

    checkpoint = load_checkpoint(teacher)
    out = []
    for example, tagged in zip(weak, predict(checkpoint.model, checkpoint.encoder, checkpoint.labels, weak)):
        taken = {i for s in example.spans for i in range(s.start, s.end)}
        extra = [s for s in tagged if not taken.intersection(range(s.start, s.end))]
        out.append(replace(example, spans=tuple(sorted([*example.spans, *extra]))))
    return out


def dictionary_only(data: str, seed: int) -> dict:
    """Test F1 of dictionary matching alone (the gazetteers for zh, the seed titles' values for en)."""
    from model.data import load_examples
    from model.metrics import entity_scores
    from stream.tagging.autolabel import autolabel, lexicon_of

    gold, _, report = weak_records(data, seed, with_gold=False)
    forms, _ = dictionary(data, gold, with_gold=False)   # zh: the gazetteers alone, no gold title at all
    test = load_examples([split_files(data)["test"]])
    predicted = autolabel([e.text for e in test], lexicon_of(forms))
    scores = entity_scores([e.spans for e in test], predicted)
    return {"test_f1": scores.micro.f1, "test": scores.to_json(), "autolabel_train_rest": report}


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {(max(values) - min(values)) / 2:.3f} ({len(values)} seeds)"


def gathered(data: str) -> tuple[list[str], list[dict]]:
    """Every cached run of ``data``, as (variant columns, one row per ROWS entry with the test F1 per
    variant and seed): the table over several invocations (`--table`)."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in sorted((CACHE / data).glob("s*/row.json"))]
    variants = sorted({_variant(r["job"]) for r in runs if r["job"]["weak"] and r["job"]["gold"]})
    rows = []
    for name, gold, weak, _ in ROWS:
        mine = [r for r in runs if r["job"]["name"] == name]
        columns = variants if weak and gold else [""]
        rows.append({"name": name, "cells": {v: {str(r["job"]["seed"]): r["test_f1"] for r in mine
                                                 if not (weak and gold) or _variant(r["job"]) == v}
                                             for v in columns}})
    return variants, rows


def _variant(job: dict) -> str:
    parts = ["confirmed forms only" if job.get("dictionary") == "confirmed by gold" else "checked dictionary"]
    if job.get("weak_weight", 1.0) != 1.0:
        parts.append(f"weak weight {job['weak_weight']:g}")
    return ", ".join(parts)


def table_markdown(data: str, variants: list[str], rows: list[dict]) -> str:
    model = "2x128 scratch + gazetteer lexicon (input)" if data == "zh" else "MiniLM-L6"
    lines = [f"Weak labels on {data} ({model}), test micro-F1, mean ± half-range over the seeds run "
             "(rows without weak labels: first column):", "", "| row | " + " | ".join(variants) + " |",
             "|---" * (len(variants) + 1) + "|"]
    for row in sorted(rows, key=lambda r: r["name"] == "all gold"):   # the ceiling last
        if "" in row["cells"]:   # no weak labels: one value, in the first column
            cells = [_cell(list(row["cells"][""].values()))] + [""] * (len(variants) - 1)
        else:
            cells = [_cell(list(row["cells"].get(v, {}).values())) for v in variants]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("zh", "en"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13])
    parser.add_argument("--budget", type=float, default=None, help="CPU-seconds per training (default zh 120, en 150)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--weak-weight", type=float, default=1.0, help="weight of a weak title in the mixed rows")
    parser.add_argument("--confirmed-only", action="store_true",
                        help="mixed rows: only the dictionary forms the 200 gold titles confirmed")
    parser.add_argument("--rows", type=int, nargs="+", help="row numbers (0-based, in ROWS) to run (default all)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--table", action="store_true",
                        help="train nothing: gather every cached run into weak_labels-<data>-all.json/.md")
    args = parser.parse_args()
    if args.table:
        variants, rows = gathered(args.data)
        seeds = sorted({int(seed) for row in rows for cell in row["cells"].values() for seed in cell})
        rows.insert(0, {"name": "dictionary matching only (no model)",
                        "cells": {"": {str(seed): dictionary_only(args.data, seed)["test_f1"] for seed in seeds}}})
        text = table_markdown(args.data, variants, rows)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"weak_labels-{args.data}-all.json").write_text(
            json.dumps({"benchmark": "weak_labels", "data": args.data, "variants": variants, "rows": rows,
                        "machine": platform.platform()}, indent=1), encoding="utf-8")
        (out / f"weak_labels-{args.data}-all.md").write_text(text, encoding="utf-8")
        print(text)
        return
    budget = args.budget or (120.0 if args.data == "zh" else 150.0)
    variant = (("-confirmed" if args.confirmed_only else "")
               + (f"-w{args.weak_weight:g}" if args.weak_weight != 1 else ""))
    chosen = [(i, row) for i, row in enumerate(ROWS) if args.rows is None or i in args.rows]
    jobs = []
    for seed in args.seeds:
        for i, (name, gold, weak, unmatched) in chosen:
            mixed = bool(weak and gold)
            jobs.append({"data": args.data, "seed": seed, "name": name, "gold": gold, "weak": weak,
                         "unmatched": unmatched, "budget": budget,
                         "out": str(CACHE / args.data / f"s{seed}-{i}{variant if mixed else ''}"),
                         **({"dictionary": "gazetteers only" if gold == 0 else
                             "confirmed by gold" if args.confirmed_only else "checked against gold"} if weak else {}),
                         **({"weak_weight": args.weak_weight} if mixed and args.weak_weight != 1 else {}),
                         **({"o_prior": "cross-fitted"} if unmatched == "prior" else {})})
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run_row, jobs))
    dictionaries = {seed: dictionary_only(args.data, seed) for seed in args.seeds}
    rows = [{"name": "dictionary matching only (no model)", "values": [d["test_f1"] for d in dictionaries.values()]}]
    for _, (name, *_) in chosen:
        rows.append({"name": name, "values": [r["test_f1"] for r in runs if r["job"]["name"] == name],
                     "cpu_seconds": [r["cpu_seconds"] for r in runs if r["job"]["name"] == name]})
    for row in rows:
        row["mean"] = statistics.mean(row["values"])
        row["spread"] = (max(row["values"]) - min(row["values"])) / 2
    model = "2x128 scratch + gazetteer lexicon (input)" if args.data == "zh" else "MiniLM-L6"
    lines = [f"Weak labels on {args.data} ({model}), test micro-F1, seeds {args.seeds}, {budget:.0f} CPU-s per training"
             + (", dictionary: forms confirmed by the gold titles only" if args.confirmed_only else "")
             + (f", weak titles weigh {args.weak_weight:g}" if args.weak_weight != 1 else "") + ":",
             "", "| row | test F1 |", "|---|---|"]
    lines += [f"| {r['name']} | {r['mean']:.3f}" + (f" ± {r['spread']:.3f}" if len(r["values"]) > 1 else "") + " |"
              for r in rows]
    report = {"benchmark": "weak_labels", "data": args.data, "seeds": args.seeds, "budget_cpu_seconds": budget,
              "weak_weight": args.weak_weight, "confirmed_only": args.confirmed_only,
              "machine": platform.platform(), "rows": rows, "runs": runs, "dictionary": dictionaries}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"weak_labels-{args.data}{variant}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / f"weak_labels-{args.data}{variant}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
