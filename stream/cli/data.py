"""Data verbs: `synth`, `convert`, `check-data`. They need model/'s data formats, not PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from stream.cli.common import verb
from stream.cli.options import positive_int


def add_verbs(verbs) -> None:
    verb(verbs, "synth", "write a deterministic synthetic labelled catalogue (JSONL)", _synth_options, cmd_synth)
    verb(verbs, "convert", "convert between JSONL spans and CoNLL (BIO/IOB2/BIOES)", _convert_options, cmd_convert)
    verb(verbs, "check-data", "validate labelled files and report what they hold", _check_options, cmd_check)


def _synth_options(p: argparse.ArgumentParser) -> None:
    from model.synth import LANGS

    p.add_argument("--taxonomy", help="taxonomy JSON (default: the demo taxonomy)")
    p.add_argument("--n", type=positive_int, default=1000, help="number of records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", choices=LANGS, default="mixed")
    p.add_argument("--products", action="store_true", help="product records (title + description)")
    p.add_argument("--out", default="-", help="output file (default: stdout)")


def cmd_synth(args: argparse.Namespace) -> int:
    from model.synth import DEMO_TAXONOMY, generate, load_taxonomy_json, main_stats

    taxonomy = load_taxonomy_json(args.taxonomy or DEMO_TAXONOMY)
    records = generate(taxonomy, args.n, seed=args.seed, lang=args.lang, products=args.products)
    with (nullcontext(sys.stdout) if args.out == "-" else open(args.out, "w", encoding="utf-8")) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    if args.out != "-":
        stats = main_stats(records)
        print(f"wrote {len(records)} records to {args.out} ({', '.join(f'{k} {v}' for k, v in sorted(stats.items()))})",
              file=sys.stderr)
    return 0


def read_any(path: str, repair: bool, level: str = "auto"):
    """(examples, sentences repaired) of a JSONL or CoNLL file."""
    from model.data import DataError, read_conll, read_jsonl

    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    if path.endswith((".jsonl", ".json")):
        return read_jsonl(path), 0
    report = read_conll(path, repair=repair, level=level)
    return report.examples, report.repaired


def _convert_options(p: argparse.ArgumentParser) -> None:
    from stream.tagging.spans import SCHEMES

    p.add_argument("input")
    p.add_argument("output", help="*.jsonl writes spans; anything else writes CoNLL")
    p.add_argument("--scheme", choices=SCHEMES, default="bioes", help="CoNLL output tags")
    p.add_argument("--level", choices=("auto", "char", "word"), default="auto",
                   help="CoNLL tokens: characters (Chinese) or words")
    p.add_argument("--repair", action="store_true", help="turn I- without B- into a new entity instead of refusing")


def cmd_convert(args: argparse.Namespace) -> int:
    from model.data import write_conll, write_jsonl

    examples, repaired = read_any(args.input, args.repair, args.level)
    if args.output.endswith((".jsonl", ".json")):
        write_jsonl(args.output, examples)
        snapped = 0
    else:
        snapped = write_conll(args.output, examples, scheme=args.scheme, level="word" if args.level == "word" else "char")
    spans = sum(len(e.spans) for e in examples)
    print(f"{args.input} -> {args.output}: {len(examples)} texts, {spans} spans"
          + (f", {repaired} sentences repaired" if repaired else "")
          + (f", {snapped} spans not on token edges (snapped)" if snapped else ""))
    return 0


def _check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+")
    p.add_argument("--repair", action="store_true", help="repair I- without B- in CoNLL input")


def cmd_check(args: argparse.Namespace) -> int:
    from model.data import labels_in

    for path in args.files:
        examples, repaired = read_any(path, args.repair)
        print(f"{path}: ok, {len(examples)} texts, {sum(len(e.spans) for e in examples)} spans, "
              f"labels {', '.join(labels_in(examples)) or '-'}" + (f", {repaired} repaired" if repaired else ""))
    return 0
