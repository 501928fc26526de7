"""Review verbs: `review select` picks the titles worth labelling (stream/cli/review_select.py),
`review push` sends picks to Label Studio with the model's spans as pre-annotations,
`review pull` turns the corrected annotations into training records."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stream.cli.common import CliError, Parser, json_lines, verb
from stream.cli.review_select import cmd_select, select_options

DEFAULT_PROJECT = "tagstream review"


def add_verbs(verbs) -> None:
    p = verbs.add_parser("review", help="review uncertain tags in Label Studio and bring the corrections back")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    verb(actions, "select", "pick the products people should label next (least certain titles first), each "
                            "with its reasons", select_options, cmd_select)
    verb(actions, "push", "send picks to a Label Studio project, the model's spans as pre-annotations",
         _push_options, cmd_push)
    verb(actions, "pull", "write the reviewed annotations as training JSONL; exit 1 if any were unusable",
         _pull_options, cmd_pull)


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio base URL (env LABEL_STUDIO_URL)")
    p.add_argument("--token", default=None,
                   help="legacy API token (env LABEL_STUDIO_TOKEN, which keeps it out of process listings)")
    p.add_argument("--project", default=DEFAULT_PROJECT, help=f"project title (default {DEFAULT_PROJECT!r})")


def _client(args: argparse.Namespace):
    from stream.service.labelstudio import Client

    # The environment is read here, not as the option's default: --help would print it.
    token = args.token or os.environ.get("LABEL_STUDIO_TOKEN")
    if not args.url:
        raise CliError("no Label Studio URL: give --url or set LABEL_STUDIO_URL")
    if not token:
        raise CliError("no Label Studio token: give --token or set LABEL_STUDIO_TOKEN")
    return Client(args.url, token)


def _push_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--picks", required=True, help="picks JSONL (from `tagstream review select`)")
    p.add_argument("--bundle", required=True, help="model bundle (or store) the picks were tagged with")
    _server_options(p)


def _bundle_types(path: str):
    """The bundle's entity types, taxonomy and model id, read torch-free."""
    from stream.tagging.bundle import read_bundle
    from stream.tagging.spans import entity_types
    from stream.tagging.taxonomy import Taxonomy

    bundle = read_bundle(path)
    taxonomy_file = bundle.file("taxonomy.json")
    taxonomy = Taxonomy.load(taxonomy_file) if taxonomy_file.is_file() else None
    return entity_types(bundle.manifest.labels), taxonomy, bundle.model_id


def cmd_push(args: argparse.Namespace) -> int:
    from stream.service.labelstudio import LabelStudioError, labelling_config, push, tasks_from_picks

    client = _client(args)
    types, taxonomy, model_id = _bundle_types(args.bundle)
    picks = json_lines(args.picks)
    unknown = sorted({str(s.get("label")) for pick in picks for s in pick.get("predictions") or []} - set(types))
    if unknown:
        raise CliError(f"{args.picks}: labels {', '.join(unknown)} are not entity types of the bundle "
                       f"({', '.join(types)})")
    tasks = tasks_from_picks(picks, model_id)
    try:
        pushed = push(client, args.project, labelling_config(types, taxonomy), tasks)
    except LabelStudioError as err:
        raise CliError(str(err)) from None
    print(f"project {pushed.project} ({args.project!r}): {pushed.imported} tasks imported, "
          f"{pushed.skipped} skipped as already there")
    return 0


def _pull_options(p: argparse.ArgumentParser) -> None:
    _server_options(p)
    p.add_argument("--export", help="read a Label Studio JSON export file instead of the server")
    p.add_argument("--bundle", help="check labels against this bundle's entity types "
                                    "(default: the project's config; none with --export)")
    p.add_argument("--out", required=True, help="training JSONL to write")


def _export(args: argparse.Namespace) -> tuple[list[dict], list[str] | None]:
    """The export (file or server) and the entity types its annotations may use."""
    from stream.service.labelstudio import LabelStudioError, config_labels, find_project, project_config, pull

    labels = _bundle_types(args.bundle)[0] if args.bundle else None
    if args.export:
        try:
            export = json.loads(Path(args.export).read_text(encoding="utf-8"))
        except ValueError as err:
            raise CliError(f"{args.export}: not a JSON export ({err})") from None
        if not isinstance(export, list):
            raise CliError(f"{args.export}: expected a JSON list of tasks (Label Studio's JSON export)")
        return export, labels
    client = _client(args)
    try:
        project = find_project(client, args.project)
        if project is None:
            raise CliError(f"{args.url}: no project titled {args.project!r}")
        if labels is None:
            labels = config_labels(project_config(client, project))
        return pull(client, project), labels
    except LabelStudioError as err:
        raise CliError(str(err)) from None


def cmd_pull(args: argparse.Namespace) -> int:
    from stream.service.labelstudio import examples_from_export, not_annotated

    export, labels = _export(args)
    records, problems = examples_from_export(export, labels)
    waiting = not_annotated(export)
    with open(args.out, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    for problem in problems:
        print(f"task {problem['task']} (annotation {problem['annotation']}): {problem['reason']}", file=sys.stderr)
    bad_tasks = len({p["task"] for p in problems})
    print(f"{args.out}: {len(records)} written, {bad_tasks} tasks with problems ({len(problems)} problems), "
          f"{len(waiting)} not annotated yet")
    return 1 if problems else 0
