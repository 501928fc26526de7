"""`autolabel`: weak (partial) labels for unlabelled titles by dictionary matching, for `train --weak`.
Reads with model/'s torch-free text readers; no PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.common import CliError, verb
from stream.cli.options import positive_int


def add_verbs(verbs) -> None:
    verb(verbs, "autolabel", "label unlabelled titles by matching a lexicon (taxonomy names and synonyms, word "
                             "lists): partial JSONL for `train --weak`, where text outside the spans is unknown",
         _options, cmd_autolabel)


def _options(p: argparse.ArgumentParser) -> None:
    from stream.tagging.autolabel import DEFAULT_MIN_CHARS, TIES

    p.add_argument("--in", dest="inputs", nargs="+", action="extend", required=True, metavar="FILE",
                   help="plain text (one title per line), product events or `tail` dumps (JSONL), labelled "
                        "JSONL or CoNLL (their labels are ignored)")
    p.add_argument("--out", required=True, help="partial JSONL to write")
    p.add_argument("--lexicon", nargs="+", action="extend", required=True, metavar="SOURCE",
                   help="taxonomy JSON files or TYPE=FILE word lists, as for `train --lexicon`")
    p.add_argument("--min-chars", type=positive_int, default=DEFAULT_MIN_CHARS,
                   help=f"shortest match kept, in characters (default {DEFAULT_MIN_CHARS}: on real Chinese titles "
                        f"single-character matches were nearly all wrong)")
    p.add_argument("--ties", choices=TIES, default="first",
                   help="a form of several types: give it to the first type (--prefer order, then by name), or "
                        "skip it, leaving its text unknown (default first)")
    p.add_argument("--check-against", nargs="+", action="extend", default=[], metavar="FILE",
                   help="labelled titles (JSONL or CoNLL): forms that matched there but were a gold span of their "
                        "type less than half the time are dropped before labelling, and listed")
    p.add_argument("--confirmed-only", action="store_true",
                   help="with --check-against: keep only the forms the labelled titles met and found mostly right "
                        "(fewer weak spans, more of them right; suits `train --weak-unmatched unknown|teacher`)")
    p.add_argument("--prefer", nargs="+", action="extend", default=[], metavar="TYPE",
                   help="types that win ties, in this order (the others follow by name)")


def cmd_autolabel(args: argparse.Namespace) -> int:
    from model.data import DataError
    from model.texts import read_texts
    from stream.tagging.autolabel import AutolabelReport, label_text, lexicon_of
    from stream.tagging.lexicon import LexiconError, read_specs

    try:
        forms = read_specs(args.lexicon)
    except LexiconError as err:
        raise CliError(f"--lexicon: {err}") from None
    unknown = [t for t in args.prefer if t not in forms]
    if unknown:
        raise CliError(f"--prefer: {', '.join(unknown)} not in the lexicon's types ({', '.join(sorted(forms))})")
    types = [*dict.fromkeys(args.prefer), *sorted(set(forms) - set(args.prefer))]
    if args.confirmed_only and not args.check_against:
        raise CliError("--confirmed-only needs --check-against (labelled titles that confirm the forms)")
    if args.check_against:
        from model.data import load_examples
        from stream.tagging.autolabel import check_forms, unmatched_o_share

        try:
            gold = load_examples(args.check_against)
        except DataError as err:
            raise CliError(str(err)) from None
        pairs = [(e.text, e.spans) for e in gold]
        o_share = unmatched_o_share(forms, pairs, min_chars=args.min_chars, confirmed_only=args.confirmed_only)
        forms, checked = check_forms(forms, pairs, min_chars=args.min_chars, confirmed_only=args.confirmed_only)
        print(f"checked against {len(gold)} labelled titles: {checked['checked']} forms met, {checked['dropped']} "
              f"dropped as mostly wrong (e.g. {', '.join(checked['most_frequent_dropped'][:5]) or 'none'})"
              + (f", {checked['unconfirmed']} never met dropped (--confirmed-only)" if args.confirmed_only else "")
              + (f"; an unmatched position is O {o_share:.1%} of the time there (2-fold): train with "
                 f"--weak-o-prior {o_share:.3f}" if o_share is not None else ""), file=sys.stderr)
    lexicon = lexicon_of(forms, types)
    report = AutolabelReport()
    lines = []
    for path in args.inputs:
        try:
            texts = read_texts([path], log=lambda line: print(line, file=sys.stderr))
        except DataError as err:
            raise CliError(str(err)) from None
        for k, text in enumerate(texts, 1):
            spans = label_text(text, lexicon, args.min_chars, args.ties, report)
            record = {"id": f"{Path(path).stem}-{k}", "text": text, "spans": [s.to_json() for s in spans],
                      "partial": True}
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    Path(args.out).write_text("".join(lines), encoding="utf-8")
    print(f"{args.out}: {report.summary()}")
    return 0
