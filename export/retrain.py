"""The offline retrain-and-export job: train a challenger, gate it, and promote it only when
it is not worse than the live champion on the same held-out set."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from export.bundle import export_bundle
from export.config import ExportConfig, ExportError, RetrainConfig
from model.config import TrainConfig
from model.metrics import entity_scores
from model.train import TOKENIZER, TrainResult, load_examples, train
from stream.tagging.bundle import current, promote, read_bundle
from stream.tagging.spans import Span, entity_types
from stream.tagging.tagger import Tagger

PROMOTED, FAILED, REJECTED = 0, 1, 3


@dataclass
class RetrainOutcome:
    status: str                    # promoted | rejected | failed
    exit_code: int
    report: dict
    report_path: Path


def tagged_spans(tagger: Tagger, examples) -> list[list[Span]]:
    """A bundle's tags for labelled examples, as spans to score against their gold."""
    return [[Span(t.start, t.end, t.type) for t in spans] for spans in tagger.tag_texts([e.text for e in examples])]


def bundle_scores(tagger: Tagger, examples, predicted: list[list[Span]]) -> dict:
    """Scores (as JSON) of a bundle's ``predicted`` spans against the examples' gold."""
    return entity_scores([e.spans for e in examples], predicted, entity_types(tagger.labels)).to_json()


def changes(gold: list, before: list[list[Span]], after: list[list[Span]]) -> dict:
    """Held-out titles whose tags changed between two models, and how many of those the change
    made exactly right (fixed) or no longer right (broken)."""
    changed = fixed = broken = 0
    for g, b, a in zip(gold, before, after):
        g, b, a = set(g), set(b), set(a)
        if a != b:
            changed += 1
            fixed += a == g
            broken += b == g
    return {"titles": len(gold), "changed": changed, "fixed": fixed, "broken": broken}


def train_members(training: TrainConfig, out: Path, members: int,
                  log: Callable[[str], None]) -> tuple[list[Path], list[TrainResult]]:
    """``members`` trainings of ``training`` into ``out``, ``out-1`` ..., with seeds seed, seed + 1 ...:
    the checkpoints of one bundle (more than one: their seed ensemble) and their results. From-scratch
    members read the first one's tokenizer (a vocabulary built twice from the same data differs)."""
    folders = [out] + [out.with_name(f"{out.name}-{i}") for i in range(1, members)]
    results = []
    for i, folder in enumerate(folders):
        config = replace(training, out=str(folder), seed=training.seed + i)
        if i and training.base_model is None and training.tokenizer is None:
            config = replace(config, tokenizer=str(folders[0] / TOKENIZER))
        results.append(train(config, log=log))
    return folders, results


def members_export(folders: list[Path], out: Path, config: RetrainConfig, **options) -> ExportConfig:
    return ExportConfig(checkpoint=str(folders[0]), members=tuple(map(str, folders[1:])), out=str(out),
                        held_out=config.held_out, **options)


def reviewed_data(config: RetrainConfig) -> dict | None:
    """What the reviewed files hold: titles and spans per type (None without any)."""
    if not config.reviewed:
        return None
    examples = load_examples(config.reviewed)
    per_type: dict[str, int] = {}
    for e in examples:
        for s in e.spans:
            per_type[s.label] = per_type.get(s.label, 0) + 1
    return {"files": list(config.reviewed), "titles": len(examples), "spans": sum(per_type.values()),
            "per_type": dict(sorted(per_type.items()))}


def _reviewed_effect(config: RetrainConfig, report: dict, held_out, after: list[list[Span]],
                     champion: list[list[Span]] | None, work: Path, log: Callable[[str], None]) -> None:
    """Fill report["reviewed"] from the challenger's held-out tags (``after``): against the champion's
    (when there is one), and against the same training without the reviewed titles when
    ``reviewed_baseline`` asks for that run."""
    entry = report["reviewed"]
    gold = [e.spans for e in held_out]
    if champion is not None:
        entry["vs_champion"] = changes(gold, champion, after)
    if not config.reviewed_baseline:
        return
    folders, _ = train_members(config.training, work / "without-reviewed", config.members, log)
    export_bundle(members_export(folders, work / "without-bundle", config, version="without-reviewed"), log=log)
    without = Tagger.load(work / "without-bundle", device="cpu")
    before = tagged_spans(without, held_out)
    f1_without = bundle_scores(without, held_out, before)["micro"]["f1"]
    f1_with = report["challenger"]["scores"]["micro"]["f1"]
    entry["without"] = {"micro_f1": f1_without, "micro_f1_with": f1_with, "f1_change": round(f1_with - f1_without, 6),
                        **changes(gold, before, after)}


def _table(report: dict) -> str:
    rows = [("", "bundle", "micro-P", "micro-R", "micro-F1", "macro-F1")]
    for role in ("champion", "challenger"):
        entry = report.get(role)
        if entry and entry.get("scores"):
            m = entry["scores"]["micro"]
            rows.append((role, entry["bundle"], f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                         f"{entry['scores']['macro_f1']:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    reviewed = report.get("reviewed")
    if reviewed:
        lines.append(f"reviewed titles used: {reviewed['titles']} ({reviewed['spans']} spans) from "
                     f"{', '.join(reviewed['files'])}")
        for name, what in (("vs_champion", "against the champion"), ("without", "against the same training without them")):
            c = reviewed.get(name)
            if c:
                f1 = (f"micro-F1 {c['micro_f1']:.4f} -> {c['micro_f1_with']:.4f} ({c['f1_change']:+.4f}); "
                      if "micro_f1" in c else "")
                lines.append(f"  {what}: {f1}held-out titles changed {c['changed']} of {c['titles']}, "
                             f"fixed {c['fixed']}, broken {c['broken']}")
    lines.append(f"decision: {report['status']} — {report['reason']}")
    return "\n".join(lines)


def challenger_taxonomy(config: RetrainConfig, champion: Tagger | None) -> str | None:
    """The taxonomy the challenger ships: the one given (to the job or its training), else the
    champion's, so a retrain never swaps the live taxonomy behind the curators' backs; with
    neither, None lets the export take the checkpoint's."""
    given = config.taxonomy or config.training.taxonomy
    if given:
        return given
    return str(champion.bundle.file("taxonomy.json")) if champion is not None else None


def retrain(config: RetrainConfig, log: Callable[[str], None] = print) -> RetrainOutcome:
    store = Path(config.store)
    store.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S")
    reports = store / "reports"
    reports.mkdir(exist_ok=True)
    report: dict = {"started_at": stamp, "store": str(store), "held_out": list(config.held_out),
                    "train_files": list(config.training.train), "tolerance": config.tolerance}
    champion_name = current(store)
    try:
        held_out = load_examples(config.held_out)
        champion, champion_tags = None, None
        if champion_name:
            champion = Tagger.load(store, device="cpu")
            champion_tags = tagged_spans(champion, held_out)
            report["champion"] = {"bundle": champion_name, "version": champion.model_version,
                                  "scores": bundle_scores(champion, held_out, champion_tags)}
        work = store / ".work" / stamp
        report["reviewed"] = reviewed_data(config)
        training = replace(config.training, train=config.training.train + config.reviewed)
        folders, results = train_members(training, work / "checkpoint", config.members, log)
        name = f"{config.training.name}-{stamp}"
        report["taxonomy"] = taxonomy = challenger_taxonomy(config, champion)
        export_bundle(members_export(folders, store / name, config, taxonomy=taxonomy, int8=config.int8,
                                     version=stamp), log=log)
        challenger = Tagger.load(store / name, device="cpu")
        challenger_tags = tagged_spans(challenger, held_out)
        report["challenger"] = {"bundle": name, "version": stamp,
                                "scores": bundle_scores(challenger, held_out, challenger_tags),
                                "members": config.members,
                                "train_dev_f1": results[0].dev.micro.f1 if results[0].dev else None,
                                "train_samples_per_second": results[0].samples_per_second}
        if config.members > 1:
            report["challenger"]["members_train_dev_f1"] = [r.dev.micro.f1 if r.dev else None for r in results]
        if config.reviewed:
            _reviewed_effect(config, report, held_out, challenger_tags, champion_tags, work, log)
        new_f1 = report["challenger"]["scores"]["micro"]["f1"]
        if champion is None:
            status, reason = "promoted", "no champion yet; the challenger passed parity"
        else:
            old_f1 = report["champion"]["scores"]["micro"]["f1"]
            delta = new_f1 - old_f1
            report["f1_change"] = round(delta, 6)
            if delta >= -config.tolerance:
                status, reason = "promoted", f"micro-F1 {new_f1:.4f} vs champion {old_f1:.4f} ({delta:+.4f}, tolerance {config.tolerance})"
            else:
                status, reason = "rejected", f"micro-F1 {new_f1:.4f} is {-delta:.4f} below champion {old_f1:.4f} (tolerance {config.tolerance})"
        if status == "promoted":
            promote(store, name)
        shutil.rmtree(work, ignore_errors=True)
    except (ExportError, ValueError, OSError) as err:
        status, reason = "failed", str(err)
    report.update(status=status, reason=reason, live=current(store),
                  finished_at=datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S"))
    path = reports / f"retrain-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    path.with_suffix(".txt").write_text(_table(report) + "\n", encoding="utf-8")
    code = {"promoted": PROMOTED, "rejected": REJECTED, "failed": FAILED}[status]
    return RetrainOutcome(status, code, report, path)


def describe(outcome: RetrainOutcome) -> str:
    return _table(outcome.report) + f"\nreport: {outcome.report_path}"


__all__ = ["RetrainConfig", "RetrainOutcome", "retrain", "describe", "read_bundle", "PROMOTED", "FAILED", "REJECTED"]
