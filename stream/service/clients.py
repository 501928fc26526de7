"""Kafka at the edge of the worker and the CLI: client options, the worker's topics, waiting for a
broker that is not up yet, and the plain clients the CLI runs (produce, tail, read a topic)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Awaitable, Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (AuthenticationFailedError, AuthenticationMethodNotSupported, BrokerResponseError,
                             KafkaConnectionError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError,
                             TopicAlreadyExistsError)

from stream.service.quietlog import NEVER_HOLD
from stream.service.settings import Settings

log = logging.getLogger("tagstream.topics")
MAX_RECORD_BYTES = 1_048_576   # aiokafka's default request limit, just under the broker's default record limit
ATTEMPT_SECONDS = 15.0      # one start attempt against a host that drops packets gives up after this
MAX_BACKOFF_SECONDS = 10.0
# Causes that waiting does not cure: wrong credentials, a TLS mismatch, a refused mechanism.
_PERMANENT = (AuthenticationFailedError, AuthenticationMethodNotSupported, BrokerResponseError, ssl.SSLError)


# The settings a plain client reads (kafka_client_options): the CLI offers them on every Kafka verb.
CLIENT_SETTINGS = ("kafka_bootstrap", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                   "ssl_cafile", "ssl_certfile", "ssl_keyfile")


class TopicError(ValueError):
    """The topics exist in a shape the worker refuses to run on."""


class ClientError(ConnectionError):
    """A produce, tail or read that could not use the broker; one line naming the broker and why."""


class RecordTooLarge(ValueError):
    """A record over the limit: it and every record after it are left unsent."""


def kafka_client_options(settings: Settings) -> dict:
    """Security options for plain aiokafka clients (admin, produce, tail)."""
    options: dict = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=settings.sasl_password)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    return context


class KafkaCauses(logging.Filter):
    """Why a client could not start. aiokafka logs the cause of each failed bootstrap (refused,
    SaslAuthenticationFailed, ...) and raises a bare "Unable to bootstrap from [...]"; this keeps
    the causes, and with ``swallow`` keeps them out of the log too (the caller says them in one line)."""

    def __init__(self, swallow: bool = False) -> None:
        super().__init__()
        self.swallow = swallow
        self.causes: list[BaseException] = []

    LOGGERS = ("aiokafka", "aiokafka.conn")     # aiokafka's client logs as "aiokafka"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        found = [a for a in args if isinstance(a, BaseException)]
        self.causes.extend(found)
        return not (self.swallow and found)

    def __enter__(self) -> "KafkaCauses":
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)

    def permanent(self, err: BaseException) -> bool:
        return any(isinstance(e, _PERMANENT) for e in [*self.causes, err])

    def why(self, err: BaseException) -> str:
        """The most telling text: the last cause aiokafka logged, else the error itself."""
        cause = self.causes[-1] if self.causes else err
        return str(cause) or type(cause).__name__


def retriable(err: BaseException, causes: KafkaCauses) -> bool:
    """Unreachable (refused, no route, not resolvable yet, timed out): worth waiting for."""
    transient = isinstance(err, (KafkaConnectionError, KafkaTimeoutError, OSError)) and not isinstance(err, ssl.SSLError)
    return transient and not causes.permanent(err)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the worker's topics if absent; the enriched topic is compacted (latest per product).
    An input topic with fewer partitions than wanted is reported (or refused, strict_partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_client_options(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        if settings.input_topic in existing:
            await _check_input_partitions(admin, settings)
        wanted = [
            NewTopic(settings.input_topic, settings.partitions, settings.replication),
            NewTopic(settings.enriched_topic, settings.partitions, settings.replication,
                     topic_configs={"cleanup.policy": "compact"}),
            NewTopic(settings.dlq_topic, 1, settings.replication),
            NewTopic(settings.drift_topic, 1, settings.replication),
            NewTopic(settings.candidates_topic, 1, settings.replication),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        return [t.name for t in missing]
    finally:
        await admin.close()


async def _check_input_partitions(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """An input topic auto-created by an early producer has the broker's default partition count
    (often 1): the group can never use more workers than that, and nothing else says so."""
    described = await admin.describe_topics([settings.input_topic])
    count = sum(len(d["partitions"]) for d in described if d.get("error_code") == 0)
    if not count or count >= settings.partitions:
        return
    message = (f"input topic {settings.input_topic} has {count} partition{'s' * (count != 1)}, fewer than "
               f"--partitions {settings.partitions} (TAGSTREAM_PARTITIONS): no more than {count} worker"
               f"{'s' * (count != 1)} of the group can get events; add partitions with "
               f"kafka-topics.sh --alter --partitions {settings.partitions}")
    if settings.strict_partitions:
        raise TopicError(f"{message} (refused: TAGSTREAM_STRICT_PARTITIONS is true)")
    log.warning("%s", message)


async def wait_for_kafka(settings: Settings, alive: Callable[[], None] = lambda: None) -> list[str]:
    """``ensure_topics``, retried with exponential backoff while Kafka is unreachable, for at most
    kafka_wait_seconds: one line per failed attempt, then a ConnectionError of one line. Starting
    before the broker (compose, a pod scheduled first) needs no service manager to retry for it."""
    where = f"Kafka at {settings.kafka_bootstrap} ({settings.security_protocol})"
    started = time.monotonic()
    deadline = started + settings.kafka_wait_seconds
    delay, attempt = 0.5, 1
    while True:
        alive()
        with KafkaCauses(swallow=True) as causes:
            try:
                timeout = max(1.0, min(ATTEMPT_SECONDS, deadline - time.monotonic()))
                return await asyncio.wait_for(ensure_topics(settings), timeout)
            except (KafkaError, OSError) as err:
                error = err
        why = causes.why(error) if str(error) or causes.causes else f"no answer in {timeout:.0f} s"
        left = deadline - time.monotonic()
        if not retriable(error, causes) or left <= 0:
            tries = f" after {attempt} attempts in {time.monotonic() - started:.0f} s" if attempt > 1 else ""
            raise ConnectionError(f"cannot use {where}{tries}: {why}") from None
        pause = min(delay, left)
        log.warning("%s unreachable (attempt %d: %s); next attempt in %.1f s", where, attempt, why, pause,
                    extra=NEVER_HOLD)
        await asyncio.sleep(pause)
        delay, attempt = min(delay * 2, MAX_BACKOFF_SECONDS), attempt + 1


# ----------------------------------------------------------------------------- the CLI's clients

def run_client(settings: Settings, what: str, run: Callable[[], Awaitable]):
    """``asyncio.run(run())`` for a client: a broker that is down, refuses or rejects ends in one
    ClientError naming the broker and why (aiokafka's own log of it is held back)."""
    with KafkaCauses(swallow=True) as causes:
        try:
            return asyncio.run(run())
        except KafkaError as err:
            raise ClientError(f"cannot {what} at {settings.kafka_bootstrap} ({settings.security_protocol}): "
                              f"{causes.why(err)}") from None


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes]],
            rate: float | None = None) -> int:
    """Send (key, value) records, acknowledged by all replicas, at ``rate`` per second (else as fast
    as possible); returns how many were sent. A record over MAX_RECORD_BYTES stops the run."""
    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    max_request_size=MAX_RECORD_BYTES, **kafka_client_options(settings))
        sent, started = 0, time.monotonic()
        try:
            await producer.start()
            pending = []
            for key, value in records:
                try:
                    pending.append(await producer.send(topic, value=value, key=key))
                except MessageSizeTooLargeError:
                    raise RecordTooLarge(f"record {sent + 1} is {len(value):,} bytes, over the {MAX_RECORD_BYTES:,} "
                                         f"a record may have ({sent} earlier record{'s' * (sent != 1)} sent, "
                                         f"none after)") from None
                sent += 1
                if rate:
                    delay = sent / rate - (time.monotonic() - started)
                    if delay > 0:
                        await asyncio.sleep(delay)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return sent

    return run_client(settings, f"send to {topic}", run)


def tail(settings: Settings, topic: str, show: Callable[[dict], None], *, limit: int | None = None,
         idle: float | None = None, from_end: bool = False) -> int:
    """Pass each record of ``topic`` to ``show`` as {partition, offset, key, value (JSON if it is)},
    until ``limit`` records or ``idle`` seconds without one; returns how many were shown."""
    async def run() -> int:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    auto_offset_reset="latest" if from_end else "earliest",
                                    enable_auto_commit=False, **kafka_client_options(settings))
        shown = 0
        try:
            await consumer.start()
            while limit is None or shown < limit:
                batch = await consumer.getmany(timeout_ms=int(idle * 1000) if idle else 1000)
                if not batch and idle:
                    break
                records = sorted((r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.partition))
                for r in records[:None if limit is None else limit - shown]:
                    show({"partition": r.partition, "offset": r.offset,
                          "key": r.key.decode("utf-8", "replace") if r.key is not None else None,
                          "value": _json_or_text(r.value)})
                    shown += 1
        finally:
            await consumer.stop()
        return shown

    return run_client(settings, f"read {topic}", run)


def _json_or_text(value: bytes | None):
    try:
        return orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


def read_topic(settings: Settings, topic: str) -> list[dict]:
    """Every JSON record of ``topic`` up to its end offsets at the time of the call."""
    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **kafka_client_options(settings))
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
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

    return run_client(settings, f"read {topic}", run)


async def _partitions(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = [p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]]
    if not numbers:
        raise ClientError(f"topic {topic!r} does not exist at {settings.kafka_bootstrap}")
    return sorted(numbers)
