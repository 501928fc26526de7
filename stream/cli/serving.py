"""Serving verbs: `tag` (no Kafka), `worker`, `produce`, `tail`, `demo`. Options come from the
worker's Settings (and the demo's DemoConfig); the Kafka clients live in stream/service/clients.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.common import CliError, settings_from, settings_options, verb
from stream.cli.options import add_options, from_args, positive_float, positive_int


def add_verbs(verbs) -> None:
    verb(verbs, "tag", "tag texts with a bundle, no Kafka (titles as arguments, or one per stdin line: a title or a JSON product)",
         _tag_options, cmd_tag)
    verb(verbs, "worker", "run a streaming worker: products.updates -> products.enriched", settings_options,
         cmd_worker)
    verb(verbs, "produce", "send product events from a JSONL file (or - for stdin) to Kafka", _produce_options,
         cmd_produce)
    verb(verbs, "tail", "print the records of a topic as JSON lines", _tail_options, cmd_tail)
    verb(verbs, "demo", "the whole service locally: Kafka, a demo model, a worker and a live synthetic feed "
                        "(Ctrl-C stops everything it started)", _demo_options, cmd_demo)


def _tag_options(p: argparse.ArgumentParser) -> None:
    from stream.service.settings import Settings

    p.add_argument("text", nargs="*")
    add_options(p, Settings, ("bundle", "variant", "device", "threads"), required=("bundle",))


def cmd_tag(args: argparse.Namespace) -> int:
    """Print, per text (or per product, for JSON lines with a title), the same tag objects that the
    worker publishes on products.enriched: one pipeline, one tag shape."""
    import orjson

    from stream.service.enrich import cap_tags
    from stream.service.settings import Settings
    from stream.tagging.pipeline import Pipeline

    pipeline = Pipeline.load(args.bundle, variant=args.variant, device=args.device, threads=args.threads)
    lines = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    products = [_product(line) for line in lines]
    for product, found in zip(products, pipeline(products)):
        kept, dropped = cap_tags(found.tags, Settings.max_tags_per_field)
        record = {k: product[k] for k in ("product_id", "title", "description") if product.get(k) is not None}
        if set(record) == {"title"}:
            record = {"text": product["title"]}
        record.update(tags=[t.to_json() for t in kept], tags_dropped=dropped, model=pipeline.model)
        print(orjson.dumps(record).decode("utf-8"), flush=True)
    return 0


def _product(line: str) -> dict:
    """A text is a title; a JSON object with a title (an input event, a synth product) is a product."""
    if line.lstrip().startswith("{"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return {"title": line}
        if isinstance(record, dict) and isinstance(record.get("title"), str):
            return {"product_id": record.get("product_id", record.get("id")), "title": record["title"],
                    "description": record.get("description") if isinstance(record.get("description"), str) else None}
    return {"title": line}


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.service.runner import run_worker

    return run_worker(settings_from(args))


def _produce_options(p: argparse.ArgumentParser) -> None:
    from stream.service.clients import CLIENT_SETTINGS

    p.add_argument("file")
    p.add_argument("--topic", help="default: the input topic")
    p.add_argument("--version", type=positive_int, help="version for synthetic catalogue records (default 1)")
    p.add_argument("--rate", type=positive_float, help="events per second (default: as fast as possible)")
    settings_options(p, CLIENT_SETTINGS + ("input_topic",))


def event_lines(path: str, version: int | None):
    """Lines of a JSONL file as (key, value bytes). Synthetic catalogue records (`synth --products`)
    become upsert events; anything else is sent as it is (the worker validates it)."""
    import orjson

    source = sys.stdin.buffer if path == "-" else open(path, "rb")
    with source:
        for line in source:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None, line
                continue
            if isinstance(record, dict) and "product_id" not in record and "id" in record and "title" in record:
                record = {"product_id": str(record["id"]), "op": "upsert", "version": version or 1,
                          "title": record["title"], "description": record.get("description"),
                          "locale": record.get("locale")}
                line = orjson.dumps(record)
            key = record.get("product_id") if isinstance(record, dict) else None
            yield (str(key).encode("utf-8") if key is not None else None), line


def cmd_produce(args: argparse.Namespace) -> int:
    from stream.service.clients import RecordTooLarge, produce

    settings = settings_from(args)
    if args.file != "-" and not Path(args.file).is_file():
        raise CliError(f"{args.file}: no such file")
    topic = args.topic or settings.input_topic
    try:
        sent = produce(settings, topic, event_lines(args.file, args.version), rate=args.rate)
    except RecordTooLarge as err:
        raise CliError(f"{args.file}: {err}") from None
    print(f"sent {sent} events to {topic}", file=sys.stderr)
    return 0


def _tail_options(p: argparse.ArgumentParser) -> None:
    from stream.service.clients import CLIENT_SETTINGS

    p.add_argument("topic")
    p.add_argument("--max", type=positive_int, help="stop after this many records")
    p.add_argument("--idle", type=positive_float, help="stop after this many seconds without a record")
    p.add_argument("--from-end", action="store_true", help="only records that arrive from now on")
    p.add_argument("--pretty", action="store_true")
    settings_options(p, CLIENT_SETTINGS)


def cmd_tail(args: argparse.Namespace) -> int:
    import orjson

    from stream.service.clients import tail

    option = orjson.OPT_INDENT_2 if args.pretty else 0

    def show(record: dict) -> None:
        print(orjson.dumps(record, option=option).decode("utf-8"), flush=True)

    tail(settings_from(args), args.topic, show, limit=args.max, idle=args.idle, from_end=args.from_end)
    return 0


def _demo_options(p: argparse.ArgumentParser) -> None:
    from stream.service.demo import DemoConfig

    add_options(p, DemoConfig)


def cmd_demo(args: argparse.Namespace) -> int:
    from export.config import ExportError
    from export.demo import DemoBundleError, demo_bundle, product_feed
    from stream.service.demo import Demo, DemoConfig, DemoError

    try:
        return Demo(from_args(args, DemoConfig), demo_bundle, product_feed()).run()
    except (DemoError, DemoBundleError, ExportError) as err:
        raise CliError(str(err)) from None
