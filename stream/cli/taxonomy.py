"""Taxonomy and drift verbs: `taxonomy validate|stats|diff|suggest|apply`, `drift report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.cli.common import CliError, Parser, json_lines, settings_from, settings_options, verb, write_json
from stream.cli.options import positive_int


def add_verbs(verbs) -> None:
    p = verbs.add_parser("taxonomy", help="check, compare and grow the tag taxonomy")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    verb(actions, "validate", "load taxonomy files and report every problem with its place",
         lambda a: a.add_argument("files", nargs="+"), cmd_validate)
    verb(actions, "stats", "nodes, synonyms, roots and depth per tag type", _stats_options, cmd_stats)
    verb(actions, "diff", "nodes added, removed and changed between two taxonomy files", _diff_options, cmd_diff)
    verb(actions, "suggest", "turn new-tag candidates (topic or file) into a patch to review", _suggest_options,
         cmd_suggest)
    verb(actions, "apply", "merge the accepted entries of a patch into a new taxonomy file", _apply_options,
         cmd_apply)

    p = verbs.add_parser("drift", help="drift reports for people")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    verb(actions, "report", "draw the drift reports (topic or file) as a PNG chart over time", _report_options,
         cmd_drift_report)


def _records(args: argparse.Namespace, default_topic: str) -> list[dict]:
    """The records of ``--file``, else of the topic (``--topic``, else the setting ``default_topic``)."""
    if args.file:
        return json_lines(args.file)
    from stream.service.clients import read_topic

    settings = settings_from(args)
    return read_topic(settings, args.topic or getattr(settings, default_topic))


def _topic_options(p: argparse.ArgumentParser, what: str, setting: str) -> None:
    from stream.service.clients import CLIENT_SETTINGS

    p.add_argument("--file", help=f"{what} as JSON lines (default: read the {setting.split('_')[0]} topic)")
    p.add_argument("--topic", help=f"default: the {setting.split('_')[0]} topic")
    settings_options(p, CLIENT_SETTINGS + (setting,))


def cmd_validate(args: argparse.Namespace) -> int:
    from stream.tagging.taxonomy import Taxonomy

    for path in args.files:
        taxonomy = Taxonomy.load(path)
        print(f"{path}: ok ({taxonomy.name} {taxonomy.version}, {len(taxonomy.nodes)} nodes, "
              f"{len(taxonomy.types)} types)")
    return 0


def _stats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--json", action="store_true")


def cmd_stats(args: argparse.Namespace) -> int:
    from stream.tagging.taxonomy import Taxonomy

    stats = Taxonomy.load(args.file).stats()
    if args.json:
        write_json("-", stats)
        return 0
    print(f"{stats['name']} {stats['version']}: {stats['nodes']} nodes")
    print(f"{'type':<12}{'nodes':>7}{'synonyms':>10}{'roots':>7}{'depth':>7}")
    for name, row in stats["types"].items():
        print(f"{name:<12}{row['nodes']:>7}{row['synonyms']:>10}{row['roots']:>7}{row['max_depth']:>7}")
    return 0


def _diff_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--json", action="store_true")


def cmd_diff(args: argparse.Namespace) -> int:
    from stream.tagging.taxonomy import Taxonomy

    diff = Taxonomy.load(args.old).diff(Taxonomy.load(args.new))
    if args.json:
        write_json("-", diff)
        return 0
    print(f"{diff['from']} -> {diff['to']}: {len(diff['added'])} added, {len(diff['removed'])} removed, "
          f"{len(diff['changed'])} changed")
    for node_id in diff["added"]:
        print(f"+ {node_id}")
    for node_id in diff["removed"]:
        print(f"- {node_id}")
    for node_id, changed in diff["changed"].items():
        print(f"~ {node_id}: " + "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return 0


def _suggest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--taxonomy", required=True, help="the taxonomy the candidates are new to")
    p.add_argument("--out", required=True, help="patch file to write (- for stdout)")
    p.add_argument("--min-count", type=positive_int, default=1, help="leave out values seen fewer times in all")
    _topic_options(p, "candidate records", "candidates_topic")


def cmd_suggest(args: argparse.Namespace) -> int:
    from stream.service.candidates import suggest
    from stream.tagging.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)
    patch = suggest(_records(args, "candidates_topic"), taxonomy, min_count=args.min_count)
    write_json(args.out, patch)
    print(f"{len(patch['add'])} proposed nodes written to {args.out}; review, then "
          f"`tagstream taxonomy apply --taxonomy {args.taxonomy} --patch {args.out} --out NEW.json`", file=sys.stderr)
    return 0


def _apply_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--taxonomy", required=True)
    p.add_argument("--patch", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--version", help="version of the new taxonomy (default: the old one, incremented)")


def cmd_apply(args: argparse.Namespace) -> int:
    import orjson

    from stream.service.candidates import apply
    from stream.tagging.taxonomy import Taxonomy

    patch = orjson.loads(Path(args.patch).read_bytes())
    taxonomy, done = apply(Taxonomy.load(args.taxonomy), patch, version=args.version)
    write_json(args.out, taxonomy.to_dict())
    print(f"{args.out}: {taxonomy.name} {taxonomy.version}, {len(done['added'])} nodes added, "
          f"{len(done['synonyms'])} synonyms added, {len(done['skipped'])} entries not accepted", file=sys.stderr)
    return 0


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="PNG file to write")
    _topic_options(p, "drift reports", "drift_topic")


def cmd_drift_report(args: argparse.Namespace) -> int:
    reports = [r for r in _records(args, "drift_topic") if "window" in r and "metrics" in r]
    if not reports:
        raise CliError("no drift reports to draw")
    try:
        from stream.service.drift_chart import draw

        draw(reports, args.out)
    except ModuleNotFoundError as err:
        raise CliError(f"`tagstream drift report` needs matplotlib ({err.name} is not installed): "
                       f"pip install 'tagstream[report]'") from None
    alerts = sum(1 for r in reports if r.get("alert"))
    print(f"{args.out}: {len(reports)} windows, {alerts} with an alert", file=sys.stderr)
    return 0
