"""The `tagstream` command. Training verbs import model/ and export/ lazily, so a serving
install without PyTorch still starts and says what to install instead of failing on an import."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, NoReturn, Sequence

TRAIN_MODULES = {"torch", "transformers", "torchcrf", "onnx", "onnxscript"}
MAX_RECORD_BYTES = 1_048_576   # aiokafka's default request limit, just under the broker's default record limit


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not a usage block: the user asked for `--help` if they want that.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _needs_training_extra(verb: str) -> Callable:
    """Import the training side, or explain the missing extra in one line."""
    try:
        import model.train  # noqa: F401  (torch, transformers, pytorch-crf)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in TRAIN_MODULES:
            raise CliError(f"`tagstream {verb}` needs the training extra ({err.name} is not installed): "
                           f"pip install 'tagstream[train]'") from None
        raise


def _number(kind: type, check: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    """An argparse type: parse as ``kind``, then refuse values outside ``check`` in one line."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    parse.__name__ = wanted  # argparse names the type in its messages
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


# ----------------------------------------------------------------------------- data verbs

def cmd_synth(args: argparse.Namespace) -> int:
    from model.synth import generate, load_taxonomy_json, main_stats

    taxonomy_path = args.taxonomy or Path(__file__).resolve().parents[2] / "model" / "resources" / "demo_taxonomy.json"
    taxonomy = load_taxonomy_json(taxonomy_path)
    records = generate(taxonomy, args.n, seed=args.seed, lang=args.lang, products=args.products)
    with (nullcontext(sys.stdout) if args.out == "-" else open(args.out, "w", encoding="utf-8")) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    if args.out != "-":
        stats = main_stats(records)
        print(f"wrote {len(records)} records to {args.out} ({', '.join(f'{k} {v}' for k, v in sorted(stats.items()))})",
              file=sys.stderr)
    return 0


def _read_any(path: str, repair: bool, level: str):
    from model.data import DataError, read_conll, read_jsonl

    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    if path.endswith((".jsonl", ".json")):
        return read_jsonl(path), 0
    report = read_conll(path, repair=repair, level=level)
    return report.examples, report.repaired


def cmd_convert(args: argparse.Namespace) -> int:
    from model.data import write_conll, write_jsonl

    examples, repaired = _read_any(args.input, args.repair, args.level)
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


def cmd_check(args: argparse.Namespace) -> int:
    from model.data import labels_in

    for path in args.files:
        examples, repaired = _read_any(path, args.repair, "auto")
        print(f"{path}: ok, {len(examples)} texts, {sum(len(e.spans) for e in examples)} spans, "
              f"labels {', '.join(labels_in(examples)) or '-'}" + (f", {repaired} repaired" if repaired else ""))
    return 0


# ----------------------------------------------------------------------------- training verbs

def _train_config(args: argparse.Namespace, out: str, verb: str):
    # Data is checked before PyTorch is imported: a typo in a file costs a second, not ten.
    for path in [*args.train, *([args.dev] if args.dev else [])]:
        _read_any(path, args.repair, "auto")
    if args.base_model and not Path(args.base_model).is_dir():
        raise CliError(f"--base-model {args.base_model}: not a directory")
    if args.hidden % args.heads:
        raise CliError(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    if args.lexicon:
        from stream.tagging.lexicon import LexiconError, read_specs

        try:
            read_specs(args.lexicon)
        except LexiconError as err:
            raise CliError(f"--lexicon: {err}") from None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see cmd_pretrain: spinning threads cost CPU time
    _needs_training_extra(verb)
    from model.train import TrainConfig

    return TrainConfig(
        train=tuple(args.train), dev=args.dev, out=out, base_model=args.base_model,
        layers=args.layers, hidden=args.hidden, heads=args.heads, vocab_size=args.vocab_size,
        max_length=args.max_length, stride=args.stride, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, head_lr=args.head_lr, warmup=args.warmup, patience=args.patience, seed=args.seed,
        max_seconds=args.max_seconds, max_cpu_seconds=args.max_cpu_seconds, threads=args.threads,
        repair=args.repair, name=args.name, lexicon=tuple(args.lexicon or ()),
        lexicon_from_train=args.lexicon_from_train, lexicon_dim=args.lexicon_dim)


def cmd_train(args: argparse.Namespace) -> int:
    config = _train_config(args, args.out, "train")
    from model.train import train

    result = train(config, log=lambda line: print(line, file=sys.stderr))
    print(f"best epoch {result.best_epoch} ({result.stopped}); dev micro-F1 {result.dev.micro.f1:.4f}; "
          f"{result.samples_per_second} samples/s; checkpoint {result.out}")
    print(result.dev.table())
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from model.texts import read_texts

    # As for `train`: the texts are read before PyTorch is imported, so a bad file fails fast.
    read_texts(args.texts)
    if args.hidden % args.heads:
        raise CliError(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    # Idle OpenMP threads spin by default: on shared cores the spinning counts as CPU time against
    # --max-cpu-seconds and slowed a small model ten-fold. Read once, when PyTorch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _needs_training_extra("pretrain")
    from model.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        texts=tuple(args.texts), out=args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
        vocab_size=args.vocab_size, max_length=args.max_length, batch_size=args.batch_size, lr=args.lr,
        mask_prob=args.mask_prob, epochs=args.epochs, max_steps=args.max_steps, max_seconds=args.max_seconds,
        max_cpu_seconds=args.max_cpu_seconds, seed=args.seed, threads=args.threads)
    result = pretrain(config, log=lambda line: print(line, file=sys.stderr))
    after = result.held_out_after
    print(f"{result.steps} steps ({result.stopped}), {result.cpu_seconds} CPU-s; MLM loss {result.first_loss:.3f} -> "
          f"{result.final_loss:.3f}" + (f"; held-out masked-token accuracy {after.accuracy:.1%}" if after else "")
          + f"; base model {result.out} (next: tagstream train --base-model {result.out} --lr 1e-3; "
            f"train's 5e-5 default suits large base models)")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    training = _train_config(args, "", "retrain")
    from export.retrain import RetrainConfig, describe, retrain

    config = RetrainConfig(store=args.store, held_out=tuple(args.held_out), training=training,
                           tolerance=args.tolerance, int8=args.int8, taxonomy=args.taxonomy)
    outcome = retrain(config, log=lambda line: print(line, file=sys.stderr))
    print(describe(outcome))
    return outcome.exit_code


def cmd_rollback(args: argparse.Namespace) -> int:
    from stream.tagging.bundle import rollback

    before, after = rollback(args.store)
    print(f"{args.store}: live bundle {before} -> {after}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _needs_training_extra("evaluate")
    from model.metrics import entity_scores
    from model.train import load_checkpoint, load_examples, predict

    checkpoint = load_checkpoint(args.checkpoint)
    examples = load_examples(args.data, repair=args.repair)
    scores = entity_scores([e.spans for e in examples],
                           predict(checkpoint.model, checkpoint.encoder, checkpoint.labels, examples))
    print(scores.table())
    if args.json:
        Path(args.json).write_text(json.dumps(scores.to_json(), indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _needs_training_extra("export")
    from export.onnx_export import ExportConfig, ExportError, export_bundle

    config = ExportConfig(checkpoint=args.checkpoint, out=args.out, held_out=tuple(args.held_out or ()),
                          taxonomy=args.taxonomy, int8=args.int8, fp16=args.fp16, opset=args.opset,
                          atol=args.atol, version=args.version, force=args.force)
    try:
        out = export_bundle(config, log=lambda line: print(line, file=sys.stderr))
    except ExportError as err:
        raise CliError(str(err)) from None
    print(f"bundle written: {out}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from stream.tagging.tagger import Tagger

    tagger = Tagger.load(args.bundle, variant=args.variant, device=args.device, threads=args.threads)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, spans in zip(texts, tagger.tag_texts(texts)):
        print(json.dumps({"text": text, "tags": [s.to_json() for s in spans],
                          "model": {"name": tagger.model_name, "version": tagger.model_version}}, ensure_ascii=False))
    return 0


# ----------------------------------------------------------------------------- streaming verbs

def _settings(args: argparse.Namespace):
    from stream.service.settings import Settings

    names = {name for name, *_ in Settings.describe()}
    return Settings.from_env(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _settings_options(p: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    from stream.service.settings import Settings

    for name, env, default, text in Settings.describe():
        if only is None or name in only:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE",
                           help=f"{text} (${env}, default {default})")


KAFKA_SETTINGS = ("kafka_bootstrap", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                  "ssl_cafile", "ssl_certfile", "ssl_keyfile")


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.service.runner import run_worker

    return run_worker(_settings(args))


def _event_lines(path: str, version: int | None):
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
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import MessageSizeTooLargeError

    from stream.service.topics import kafka_client_options

    settings = _settings(args)
    if args.file != "-" and not Path(args.file).is_file():
        raise CliError(f"{args.file}: no such file")

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    max_request_size=MAX_RECORD_BYTES, **kafka_client_options(settings))
        sent, started = 0, time.monotonic()
        try:
            await producer.start()
            pending = []
            for key, value in _event_lines(args.file, args.version):
                try:
                    pending.append(await producer.send(args.topic or settings.input_topic, value=value, key=key))
                except MessageSizeTooLargeError:
                    raise CliError(f"{args.file}: record {sent + 1} is {len(value):,} bytes, over the "
                                   f"{MAX_RECORD_BYTES:,} a record may have ({sent} earlier record"
                                   f"{'s' * (sent != 1)} sent, none after)") from None
                sent += 1
                if args.rate:
                    delay = sent / args.rate - (time.monotonic() - started)
                    if delay > 0:
                        await asyncio.sleep(delay)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return sent

    sent = _run_kafka(settings, f"send to {args.topic or settings.input_topic}", run)
    print(f"sent {sent} events to {args.topic or settings.input_topic}", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    import orjson
    from aiokafka import AIOKafkaConsumer

    from stream.service.topics import kafka_client_options

    settings = _settings(args)

    async def run() -> int:
        consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    auto_offset_reset="latest" if args.from_end else "earliest",
                                    enable_auto_commit=False, **kafka_client_options(settings))
        shown = 0
        option = orjson.OPT_INDENT_2 if args.pretty else 0
        try:
            await consumer.start()
            while args.max is None or shown < args.max:
                batch = await consumer.getmany(timeout_ms=int(args.idle * 1000) if args.idle else 1000)
                if not batch and args.idle:
                    break
                records = sorted((r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.partition))
                for r in records[:None if args.max is None else args.max - shown]:
                    try:
                        value = orjson.loads(r.value) if r.value is not None else None
                    except orjson.JSONDecodeError:
                        value = r.value.decode("utf-8", "replace")
                    line = {"partition": r.partition, "offset": r.offset,
                            "key": r.key.decode("utf-8", "replace") if r.key is not None else None, "value": value}
                    print(orjson.dumps(line, option=option).decode("utf-8"), flush=True)
                    shown += 1
        finally:
            await consumer.stop()
        return shown

    _run_kafka(settings, f"read {args.topic}", run)
    return 0


def _run_kafka(settings, what: str, run: Callable):
    """``asyncio.run(run())`` for a verb that talks to Kafka: a broker that is down, refuses or
    rejects ends in one line naming the broker and why (aiokafka's own log of it is held back)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from stream.service.topics import KafkaCauses

    with KafkaCauses(swallow=True) as causes:
        try:
            return asyncio.run(run())
        except KafkaError as err:
            raise CliError(f"cannot {what} at {settings.kafka_bootstrap} ({settings.security_protocol}): "
                           f"{causes.why(err)}") from None


# ----------------------------------------------------------------------------- taxonomy and drift

def _read_topic(settings, topic: str) -> list[dict]:
    """Every JSON record of ``topic`` up to its end offsets at the time of the call."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from stream.service.topics import kafka_client_options

    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **kafka_client_options(settings))
        try:
            await consumer.start()
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_client_options(settings))
            await admin.start()
            try:
                described = await admin.describe_topics([topic])
            finally:
                await admin.close()
            numbers = [p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]]
            if not numbers:
                raise CliError(f"topic {topic!r} does not exist at {settings.kafka_bootstrap}")
            tps = [TopicPartition(topic, p) for p in sorted(numbers)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            out = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend(orjson.loads(r.value) for r in records if r.value is not None)
            return out
        finally:
            await consumer.stop()

    return _run_kafka(settings, f"read {topic}", run)


def _json_lines(path: str) -> list[dict]:
    import orjson

    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as err:
                raise CliError(f"{path}:{number}: not JSON ({err})") from None
    return out


def _records(args: argparse.Namespace, default_topic: str) -> list[dict]:
    if args.file:
        return _json_lines(args.file)
    settings = _settings(args)
    return _read_topic(settings, args.topic or getattr(settings, default_topic))


def _write_json(path: str, data) -> None:
    import json

    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def cmd_taxonomy(args: argparse.Namespace) -> int:
    import orjson

    from stream.service.candidates import apply, suggest
    from stream.tagging.taxonomy import Taxonomy

    if args.action == "validate":
        for path in args.files:
            taxonomy = Taxonomy.load(path)
            print(f"{path}: ok ({taxonomy.name} {taxonomy.version}, {len(taxonomy.nodes)} nodes, "
                  f"{len(taxonomy.types)} types)")
    elif args.action == "stats":
        stats = Taxonomy.load(args.file).stats()
        if args.json:
            _write_json("-", stats)
        else:
            print(f"{stats['name']} {stats['version']}: {stats['nodes']} nodes")
            print(f"{'type':<12}{'nodes':>7}{'synonyms':>10}{'roots':>7}{'depth':>7}")
            for name, row in stats["types"].items():
                print(f"{name:<12}{row['nodes']:>7}{row['synonyms']:>10}{row['roots']:>7}{row['max_depth']:>7}")
    elif args.action == "diff":
        diff = Taxonomy.load(args.old).diff(Taxonomy.load(args.new))
        if args.json:
            _write_json("-", diff)
        else:
            print(f"{diff['from']} -> {diff['to']}: {len(diff['added'])} added, {len(diff['removed'])} removed, "
                  f"{len(diff['changed'])} changed")
            for node_id in diff["added"]:
                print(f"+ {node_id}")
            for node_id in diff["removed"]:
                print(f"- {node_id}")
            for node_id, fields in diff["changed"].items():
                print(f"~ {node_id}: " + "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in fields.items()))
    elif args.action == "suggest":
        taxonomy = Taxonomy.load(args.taxonomy)
        patch = suggest(_records(args, "candidates_topic"), taxonomy, min_count=args.min_count)
        _write_json(args.out, patch)
        print(f"{len(patch['add'])} proposed nodes written to {args.out}; review, then "
              f"`tagstream taxonomy apply --taxonomy {args.taxonomy} --patch {args.out} --out NEW.json`",
              file=sys.stderr)
    elif args.action == "apply":
        patch = orjson.loads(Path(args.patch).read_bytes())
        taxonomy, done = apply(Taxonomy.load(args.taxonomy), patch, version=args.version)
        _write_json(args.out, taxonomy.to_dict())
        print(f"{args.out}: {taxonomy.name} {taxonomy.version}, {len(done['added'])} nodes added, "
              f"{len(done['synonyms'])} synonyms added, {len(done['skipped'])} entries not accepted", file=sys.stderr)
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from export.demo import DemoBundleError, demo_bundle, product_feed
    from stream.service.demo import Demo, DemoConfig, DemoError

    config = DemoConfig(events=args.events or 0, rate=args.rate, bootstrap=args.kafka_bootstrap,
                        metrics_port=args.metrics_port)
    if args.cache:
        config.cache = Path(args.cache)
    try:
        return Demo(config, demo_bundle, product_feed()).run()
    except (DemoError, DemoBundleError) as err:
        raise CliError(str(err)) from None


# ----------------------------------------------------------------------------- parser

def _training_options(p: argparse.ArgumentParser) -> None:
    base = p.add_mutually_exclusive_group()
    base.add_argument("--base-model", help="local folder of a BERT-family checkpoint")
    base.add_argument("--scratch", action="store_true", help="build a vocabulary and a small BERT from the data (default)")
    p.add_argument("--layers", type=_positive_int, default=2)
    p.add_argument("--hidden", type=_positive_int, default=128)
    p.add_argument("--heads", type=_positive_int, default=4)
    p.add_argument("--vocab-size", type=_positive_int, default=8000)
    p.add_argument("--max-length", type=_positive_int, default=128)
    p.add_argument("--stride", type=int, default=32, help="sub-tokens shared by overlapping windows")
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--lr", type=_positive_float, help="encoder learning rate (default 5e-5 pretrained, 1e-3 scratch)")
    p.add_argument("--head-lr", type=_positive_float, default=5e-3, help="emission and CRF learning rate")
    p.add_argument("--warmup", type=_fraction, default=0.1, help="share of steps spent warming up")
    p.add_argument("--patience", type=_positive_int, default=3, help="epochs without dev improvement before stopping")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-seconds", type=_positive_float, help="training time budget")
    p.add_argument("--max-cpu-seconds", type=_positive_float,
                   help="training budget in process CPU time (the same compute on a busy machine)")
    p.add_argument("--lexicon", action="append", metavar="SOURCE",
                   help="lexicon features from a taxonomy JSON file or TYPE=FILE (a word list); repeatable")
    p.add_argument("--lexicon-from-train", action="store_true",
                   help="add the training set's entity strings to the lexicon")
    p.add_argument("--lexicon-dim", type=_positive_int, default=32, help="size of the lexicon feature embedding")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for PyTorch")
    p.add_argument("--repair", action="store_true", help="repair I- without B- in CoNLL input")
    p.add_argument("--name", default="tagstream-tagger", help="model name recorded in the checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tagstream", description="Real-time product tagging: train, export, serve.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    p = verbs.add_parser("synth", help="write a deterministic synthetic labelled catalogue (JSONL)")
    p.add_argument("--taxonomy", help="taxonomy JSON (default: the demo taxonomy)")
    p.add_argument("--n", type=_positive_int, default=1000, help="number of records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", choices=("zh", "en", "mixed"), default="mixed")
    p.add_argument("--products", action="store_true", help="product records (title + description)")
    p.add_argument("--out", default="-", help="output file (default: stdout)")
    p.set_defaults(run=cmd_synth)

    p = verbs.add_parser("convert", help="convert between JSONL spans and CoNLL (BIO/IOB2/BIOES)")
    p.add_argument("input")
    p.add_argument("output", help="*.jsonl writes spans; anything else writes CoNLL")
    p.add_argument("--scheme", choices=("bioes", "bio", "iob2"), default="bioes", help="CoNLL output tags")
    p.add_argument("--level", choices=("auto", "char", "word"), default="auto",
                   help="CoNLL tokens: characters (Chinese) or words")
    p.add_argument("--repair", action="store_true", help="turn I- without B- into a new entity instead of refusing")
    p.set_defaults(run=cmd_convert)

    p = verbs.add_parser("check-data", help="validate labelled files and report what they hold")
    p.add_argument("files", nargs="+")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(run=cmd_check)

    p = verbs.add_parser("train", help="train a BERT-CRF tagger (needs the train extra)")
    p.add_argument("--train", nargs="+", required=True, help="labelled JSONL or CoNLL files")
    p.add_argument("--dev", help="dev file for early stopping (default: 10%% of train)")
    p.add_argument("--out", required=True, help="checkpoint directory")
    _training_options(p)
    p.set_defaults(run=cmd_train)

    p = verbs.add_parser("pretrain", help="masked-language-model pretraining of a small BERT on unlabelled texts: "
                                          "a base model for `train --base-model` (needs the train extra)")
    p.add_argument("--texts", action="extend", nargs="+", required=True,
                   help="plain text (one per line), product events or `tail` dumps of the input topic (JSONL), "
                        "labelled JSONL or CoNLL; may repeat")
    p.add_argument("--out", required=True, help="base model directory to write")
    p.add_argument("--layers", type=_positive_int, default=2)
    p.add_argument("--hidden", type=_positive_int, default=128)
    p.add_argument("--heads", type=_positive_int, default=4)
    p.add_argument("--vocab-size", type=_positive_int, default=8000)
    p.add_argument("--max-length", type=_number(int, lambda v: v >= 8, "an integer of at least 8"), default=128,
                   help="sub-tokens per text; longer texts are cut")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--mask-prob", type=_number(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)"), default=0.15,
                   help="share of words predicted (all sub-tokens of a word; each CJK character is a word)")
    p.add_argument("--epochs", type=_positive_int, help="passes over the texts (default 10 when no budget is given)")
    p.add_argument("--max-steps", type=_positive_int, help="step budget")
    p.add_argument("--max-seconds", type=_positive_float, help="wall-clock budget")
    p.add_argument("--max-cpu-seconds", type=_positive_float,
                   help="process CPU-time budget: the same compute on a busy machine")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--threads", type=_positive_int, help="CPU threads for PyTorch")
    p.set_defaults(run=cmd_pretrain)

    p = verbs.add_parser("evaluate", help="entity-level precision/recall/F1 of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--json", help="also write the scores as JSON here")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = verbs.add_parser("export", help="export a checkpoint to a model bundle, gated on ONNX parity")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--held-out", nargs="+", help="labelled texts for parity and F1 (default: the checkpoint's dev file)")
    p.add_argument("--taxonomy", help="taxonomy JSON shipped in the bundle (default: the demo taxonomy)")
    p.add_argument("--int8", action="store_true", help="also write a dynamically quantised int8 model")
    p.add_argument("--fp16", action="store_true", help="also write an fp16 model (for GPUs)")
    p.add_argument("--opset", type=_positive_int, default=17)
    p.add_argument("--atol", type=_positive_float, default=1e-4, help="emission parity tolerance")
    p.add_argument("--version", help="model version (default: UTC timestamp)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    p.set_defaults(run=cmd_export)

    p = verbs.add_parser("tag", help="tag texts with a bundle, no Kafka (texts as arguments or one per stdin line)")
    p.add_argument("text", nargs="*")
    p.add_argument("--bundle", required=True, help="bundle directory or model store")
    p.add_argument("--variant", choices=("fp32", "int8", "fp16"), default="fp32")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=_positive_int)
    p.set_defaults(run=cmd_tag)

    p = verbs.add_parser("retrain", help="train a challenger, export it, and promote it if it is not worse "
                                         "(exit 0 promoted, 3 rejected, 1 failed)")
    p.add_argument("--train", nargs="+", required=True, help="labelled data for the challenger")
    p.add_argument("--dev", help="dev file for early stopping (default: 10%% of train)")
    p.add_argument("--store", required=True, help="model store: bundles plus the CURRENT pointer workers watch")
    p.add_argument("--held-out", nargs="+", required=True, help="labelled texts both models are judged on")
    p.add_argument("--tolerance", type=_fraction, default=0.005, help="allowed micro-F1 drop against the champion")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--taxonomy")
    _training_options(p)
    p.set_defaults(run=cmd_retrain)

    p = verbs.add_parser("worker", help="run a streaming worker: products.updates -> products.enriched")
    _settings_options(p)
    p.set_defaults(run=cmd_worker)

    p = verbs.add_parser("produce", help="send product events from a JSONL file (or - for stdin) to Kafka")
    p.add_argument("file")
    p.add_argument("--topic", help="default: the input topic")
    p.add_argument("--version", type=_positive_int, help="version for synthetic catalogue records (default 1)")
    p.add_argument("--rate", type=_positive_float, help="events per second (default: as fast as possible)")
    _settings_options(p, KAFKA_SETTINGS + ("input_topic",))
    p.set_defaults(run=cmd_produce)

    p = verbs.add_parser("tail", help="print the records of a topic as JSON lines")
    p.add_argument("topic")
    p.add_argument("--max", type=_positive_int, help="stop after this many records")
    p.add_argument("--idle", type=_positive_float, help="stop after this many seconds without a record")
    p.add_argument("--from-end", action="store_true", help="only records that arrive from now on")
    p.add_argument("--pretty", action="store_true")
    _settings_options(p, KAFKA_SETTINGS)
    p.set_defaults(run=cmd_tail)

    p = verbs.add_parser("taxonomy", help="check, compare and grow the tag taxonomy")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    a = actions.add_parser("validate", help="load taxonomy files and report every problem with its place")
    a.add_argument("files", nargs="+")
    a = actions.add_parser("stats", help="nodes, synonyms, roots and depth per tag type")
    a.add_argument("file")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("diff", help="nodes added, removed and changed between two taxonomy files")
    a.add_argument("old")
    a.add_argument("new")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("suggest", help="turn new-tag candidates (topic or file) into a patch to review")
    a.add_argument("--taxonomy", required=True, help="the taxonomy the candidates are new to")
    a.add_argument("--out", required=True, help="patch file to write (- for stdout)")
    a.add_argument("--file", help="candidate records as JSON lines (default: read the candidates topic)")
    a.add_argument("--topic", help="default: the candidates topic")
    a.add_argument("--min-count", type=_positive_int, default=1, help="leave out values seen fewer times in all")
    _settings_options(a, KAFKA_SETTINGS + ("candidates_topic",))
    a = actions.add_parser("apply", help="merge the accepted entries of a patch into a new taxonomy file")
    a.add_argument("--taxonomy", required=True)
    a.add_argument("--patch", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--version", help="version of the new taxonomy (default: the old one, incremented)")
    p.set_defaults(run=cmd_taxonomy)

    p = verbs.add_parser("drift", help="drift reports for people")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    a = actions.add_parser("report", help="draw the drift reports (topic or file) as a PNG chart over time")
    a.add_argument("--out", required=True, help="PNG file to write")
    a.add_argument("--file", help="drift reports as JSON lines (default: read the drift topic)")
    a.add_argument("--topic", help="default: the drift topic")
    _settings_options(a, KAFKA_SETTINGS + ("drift_topic",))
    p.set_defaults(run=cmd_drift)

    p = verbs.add_parser("demo", help="the whole service locally: Kafka, a demo model, a worker and a live "
                                      "synthetic feed (Ctrl-C stops everything it started)")
    p.add_argument("--events", type=_positive_int, help="send this many events, wait for them, stop "
                                                       "(default: replay until Ctrl-C)")
    p.add_argument("--rate", type=_positive_float, default=40.0, help="events per second")
    p.add_argument("--cache", help="where the demo model and worker state live (default ~/.cache/tagstream/demo)")
    p.add_argument("--kafka-bootstrap", default="127.0.0.1:9092",
                   help="a broker to use; the local one is started if none answers")
    p.add_argument("--metrics-port", type=_positive_int, default=9464)
    p.set_defaults(run=cmd_demo)

    p = verbs.add_parser("rollback", help="point the model store back at the previous bundle")
    p.add_argument("--store", required=True)
    p.set_defaults(run=cmd_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("tagstream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (CliError, ValueError, OSError) as err:
        if os.environ.get("TAGSTREAM_DEBUG"):
            raise
        # DataError and SchemeError are ValueErrors: their message already says file, line and what.
        text = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.filename}: {err.strerror}"
        print(f"tagstream: error: {text}", file=sys.stderr)
        return 1


def entrypoint() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
