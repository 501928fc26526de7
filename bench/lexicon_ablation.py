"""Lexicon features and domain pretraining on real text, one table: from scratch, + lexicon,
+ pretraining, + both, each fine-tuned under the same CPU-time budget; settings chosen on dev.
The lexicon rows come in both forms: flags concatenated at the encoder's output (the default),
and flags summed into the input embeddings (``--lexicon-at input``).

    python bench/lexicon_ablation.py [--budget 400] [--pretrain-budget 800] [--lrs 1e-3 2e-3] [--jobs 2]

Data: ../shared/data/ecommerce-ner (real Chinese product titles, HP brand / HC product type,
BIOES), its gazetteers as the lexicon (brand*.txt -> HP, product*.txt -> HC). Pretraining is MLM
on the training titles without their labels. Every run is one thread; ``--jobs`` run side by side.
Writes bench/results/lexicon_ablation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "ecommerce-ner"
CACHE = ROOT / "bench" / ".cache" / "ablation"
SHAPE = {"layers": 2, "hidden": 128, "heads": 4}
# (name, where the lexicon joins or None for no lexicon, pretrained)
ROWS = (("from scratch", None, False), ("+ lexicon", "output", False), ("+ lexicon at the input", "input", False),
        ("+ pretraining", None, True), ("+ both", "output", True), ("+ both, lexicon at the input", "input", True))


def gazetteers() -> tuple[str, ...]:
    folder = DATA / "gazetteers"
    return (*(f"HP={p}" for p in sorted(folder.glob("brand*.txt"))),
            *(f"HC={p}" for p in sorted(folder.glob("product*.txt"))))


def run_pretraining(budget: float, out: Path) -> dict:
    from model.pretrain import PretrainConfig, pretrain

    record = out / "pretrain.json"
    if record.is_file() and json.loads(record.read_text()).get("config", {}).get("max_cpu_seconds") == budget:
        print(f"pretrained model reused from {out}", file=sys.stderr)
    else:
        pretrain(PretrainConfig(texts=(str(DATA / "train.bioes"),), out=str(out), max_cpu_seconds=budget,
                                threads=1, **SHAPE), log=lambda line: print(f"[pretrain] {line}", file=sys.stderr))
    return json.loads(record.read_text())


def fine_tune(job: dict) -> dict:
    """One row at one setting: train on train, stop on dev, score the best checkpoint on test.
    A finished run with the same settings is reused, so the table can be built up in parts."""
    import torch

    record = Path(job["out"]) / "ablation_run.json"
    running = Path(job["out"]) / ".running"
    while running.exists() and not record.is_file():
        time.sleep(10)   # the same run started by another invocation: wait for its result
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if {k: done.get(k) for k in job} == json.loads(json.dumps(job)):
            print(f"[{job['name']} lr {job['lr']}] reused {record}", file=sys.stderr)
            return done

    from model.metrics import entity_scores
    from model.train import TrainConfig, load_checkpoint, load_examples, predict, train

    torch.set_num_threads(1)
    Path(job["out"]).mkdir(parents=True, exist_ok=True)
    running.touch()
    config = TrainConfig(train=(str(DATA / "train.bioes"),), dev=str(DATA / "dev.bioes"), out=job["out"],
                         base_model=job["base_model"], lr=job["lr"], lexicon=tuple(job["lexicon"]),
                         lexicon_at=job.get("lexicon_at", "output"),
                         max_cpu_seconds=job["budget"], epochs=1000, patience=1000, threads=1, **SHAPE)
    started = time.process_time()
    result = train(config, log=lambda line: print(f"[{job['name']} lr {job['lr']}] {line}", file=sys.stderr))
    cpu = time.process_time() - started
    checkpoint = load_checkpoint(job["out"])
    test = load_examples([DATA / "test.bioes"])
    scores = entity_scores([e.spans for e in test], predict(checkpoint.model, checkpoint.encoder, checkpoint.labels, test))
    done = {**job, "dev_micro_f1": result.dev.micro.f1, "best_epoch": result.best_epoch,
            "epochs": len(result.epochs), "cpu_seconds": round(cpu, 1), "test": scores.to_json()}
    record.write_text(json.dumps(done, indent=1), encoding="utf-8")
    running.unlink(missing_ok=True)
    return done


def table(rows: list[dict], budget: float, pretrain_record: dict | None) -> str:
    pre = ""
    if pretrain_record:
        pre = (f" Pretraining (rows marked +pretraining) ran before that: MLM on the 3,989 training titles without "
               f"labels, {pretrain_record.get('cpu_seconds')} CPU-seconds, {pretrain_record.get('steps')} steps.")
    lines = [f"Real data: ecommerce-ner (Chinese titles, HP brand, HC product type), test.bioes, 498 titles. "
             f"Each row: a {SHAPE['layers']}-layer/{SHAPE['hidden']} BERT-CRF fine-tuned for {budget:.0f} CPU-seconds "
             f"(one thread), learning rate chosen on dev.bioes.{pre}", "",
             "| row | lr (dev) | CPU-s | dev F1 | test P | test R | test F1 | HP F1 | HC F1 | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["test"]
        lines.append(f"| {r['name']} | {r['lr']:g} | {r['budget']:.0f} | {r['dev_micro_f1']:.3f} | {t['micro']['precision']:.3f} | "
                     f"{t['micro']['recall']:.3f} | **{t['micro']['f1']:.3f}** | {t['per_type']['HP']['f1']:.3f} | "
                     f"{t['per_type']['HC']['f1']:.3f} | {r['epochs']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=400, help="fine-tuning CPU-seconds per run")
    parser.add_argument("--pretrain-budget", type=float, default=800, help="pretraining CPU-seconds")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3], help="encoder learning rates tried on dev")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    parser.add_argument("--rows", nargs="+", choices=[r[0] for r in ROWS], default=[r[0] for r in ROWS])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if not (DATA / "train.bioes").is_file():
        sys.exit(f"{DATA}: the real labelled data is not there (it lives in ../shared/data)")
    rows = [r for r in ROWS if r[0] in args.rows]
    pretrained = CACHE / "pretrained"
    # Only input-form jobs name lexicon_at, so the runs cached before it existed are still reused.
    jobs = [{"name": name, "lr": lr, "budget": args.budget, "lexicon": gazetteers() if lexicon else (),
             **({"lexicon_at": lexicon} if lexicon == "input" else {}),
             "base_model": str(pretrained) if pre else None, "out": str(CACHE / f"{name.strip('+ ')}-lr{lr:g}")}
            for name, lexicon, pre in rows for lr in args.lrs]
    pretrain_record = None
    with ProcessPoolExecutor(args.jobs) as pool:
        # Pretraining starts first, and rows without it run beside it.
        pending = pool.submit(run_pretraining, args.pretrain_budget, pretrained) if any(
            job["base_model"] for job in jobs) else None
        early = [pool.submit(fine_tune, job) for job in jobs if not job["base_model"]]
        if pending:
            pretrain_record = pending.result()
        late = [pool.submit(fine_tune, job) for job in jobs if job["base_model"]]
        results = [f.result() for f in early]
        chosen = {name: max((r for r in results if r["name"] == name), key=lambda r: r["dev_micro_f1"])
                  for name, _, pre in rows if not pre}
        fair = None
        if pretrain_record and "from scratch" in chosen:
            # Pretraining is compute too: from scratch again, with the pretraining budget added.
            lr = chosen["from scratch"]["lr"]
            fair = pool.submit(fine_tune, {**jobs[0], "name": "from scratch, budget + pretraining", "lr": lr,
                                           "budget": args.budget + args.pretrain_budget,
                                           "out": str(CACHE / f"scratch-total-lr{lr:g}")})
        results += [f.result() for f in late]
        for name, _, pre in rows:
            if pre:
                chosen[name] = max((r for r in results if r["name"] == name), key=lambda r: r["dev_micro_f1"])
        chosen = [chosen[name] for name, _, _ in rows]
        if fair:
            results.append(fair.result())
            chosen.append(results[-1])
    report = {"benchmark": "lexicon_ablation", "data": str(DATA), "shape": SHAPE, "budget_cpu_seconds": args.budget,
              "pretrain": pretrain_record, "lrs": args.lrs, "machine": platform.platform(),
              "runs": results, "chosen": [{"name": r["name"], "lr": r["lr"]} for r in chosen]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lexicon_ablation.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    markdown = table(chosen, args.budget, pretrain_record)
    (out / "lexicon_ablation.md").write_text(markdown, encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
