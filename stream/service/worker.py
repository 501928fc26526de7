"""The Faust worker: product events in, enriched products and dead letters out, at least once.

Batches are pipelined (``flow.BatchFlow``): the agent takes batch n+1 while batch n is in the
model and batch n-1 is being published. Acknowledgement: each taken event is held by an extra
reference until its batch's outputs are acked by the broker (acks=all) and its state is written;
only then is it acked, so an input offset can only be committed after its output is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, NamedTuple

import faust
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError, KafkaError

from stream.service import metrics
from stream.service.drift import DriftConfig, DriftWindow, TextObservation
from stream.service.enrich import DLQ, ENRICHED, BatchResult, enrich, parse_batch
from stream.service.events import Limits, ProductEvent, RawEvent
from stream.service.failpoints import PoisonedPipeline, failpoint
from stream.service.flow import BatchFlow
from stream.service.fixups import (SeekThenDeliverTableManager, as_current_event, batch_fetches, rejoin_group,
                                   reseek_stalled_consumer)
from stream.service.health import Health
from stream.service.serving import Lanes, ServingPipeline
from stream.service.settings import Settings
from stream.service.clients import kafka_client_options, ssl_context

log = logging.getLogger("tagstream.worker")
STATE_TABLE = "product-state"
EXIT_PUBLISH_FAILED = 3
EXIT_BATCH_FAILED = 4


class Prepared(NamedTuple):
    """A batch out of the model stage: its outputs and new state, drift observations, and per
    product id the event its state is written under."""

    result: BatchResult
    observations: list[TextObservation]
    carrier: dict[str, Any]
LAG_TIMEOUT_SECONDS = 4.0   # under the lag timer's 5 s: an outage must not pile the timer up


def _faust_credentials(settings: Settings):
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password, mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context(settings) if settings.security_protocol == "SASL_SSL" else None)
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


def faust_app(settings: Settings) -> faust.App:
    """The worker's Faust app: its group, broker, store, producer and consumer settings."""
    return faust.App(
        settings.group_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=_faust_credentials(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        # Static membership: a restarted worker with the same id takes its partitions back at
        # once instead of waiting out the session timeout of its own dead member.
        consumer_group_instance_id=settings.instance_id or None,
        datadir=settings.data_dir,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        producer_acks=-1,
        # A batch's outputs and changelog in a few produce requests, not one per record as sent: on
        # shared cores the broker's work per request is taken from inference (bench/stream.py).
        producer_linger=settings.producer_linger,
        producer_max_batch_size=settings.producer_batch_bytes,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A SIGKILLed worker never leaves the group: its partitions wait this long for it.
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.session_timeout / 10,
        table_standby_replicas=0,
        autodiscover=False,
        TableManager=SeekThenDeliverTableManager,
    )


class EnrichmentWorker:
    """Wires the settings into a Faust app with one enrichment agent and a state table."""

    _admin: AIOKafkaAdminClient | None = None     # the lag timer's, opened on first use

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.models = ServingPipeline(settings)
        self.health = Health.from_settings(settings)     # what /healthz and /readyz answer
        self.lanes = Lanes(self.models, self.models.lanes)
        self.limits = Limits(settings.max_event_bytes, settings.max_field_chars, settings.max_product_id_chars,
                             settings.key_policy, settings.max_tags_per_field, settings.max_output_bytes,
                             settings.dlq_value_prefix_bytes)
        self.app = faust_app(settings)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.input = self.app.topic(settings.input_topic, partitions=settings.partitions, allow_empty=True, **raw)
        self.enriched = self.app.topic(settings.enriched_topic, **raw)
        self.dlq = self.app.topic(settings.dlq_topic, **raw)
        self.drift_out = self.app.topic(settings.drift_topic, **raw)
        self.candidates_out = self.app.topic(settings.candidates_topic, **raw)
        self.drift_config = DriftConfig.from_settings(settings)
        self.window = DriftWindow(self.drift_config, self.models.pipeline.reference,
                                  covered_types=self.models.pipeline.taxonomy.covered_types)
        # Each product's state is written under the event that carried it (``as_current_event``), so
        # its changelog partition (and RocksDB database) is its input partition: a worker's state is
        # exactly that of the partitions it consumes.
        # key_type=bytes: Faust derives the changelog serializers from the types (raw keys, JSON values).
        self.state = self.app.Table(STATE_TABLE, default=None, partitions=settings.partitions, key_type=bytes)
        self.app.agent(self.input, name="enrich")(self.process)
        self.app.timer(1.0)(self.close_window_if_due)  # time-based windows close without traffic too
        self.app.timer(5.0)(self.measure_lag)
        self.app.on_partitions_assigned.connect(self.on_assigned)
        self.next_offsets: dict[int, int] = {}          # input partition -> next offset to process
        self.lag_partitions: set[str] = set()
        self.last_progress = time.monotonic()           # the stall watchdog's clock
        self.flow: BatchFlow | None = None              # the agent's batch pipeline, once it runs
        self.serial_busy = False                        # without the pipeline: a batch is in hand
        self.unwritten: dict[str, dict] = {}            # state enriched but not yet written to the table
        self.stalled_once = False
        self.repairs_since_progress = 0                 # stall repairs with no batch since

    async def on_assigned(self, sender, assigned, **kwargs) -> None:
        """After each assignment (the consumer is running): fewer, larger fetches (fixups.py)."""
        if not batch_fetches(self.app, max_wait_ms=max(1, round(self.settings.fetch_max_wait * 1000))):
            log.warning("cannot set the consumer's fetch sizes (unknown faust/aiokafka internals); "
                        "using faust's defaults")

    async def process(self, stream) -> None:
        if not self.settings.pipeline:
            await self.process_serially(stream)
            return
        flow = BatchFlow(self.settings.max_batch, self.prepare, self.deliver, stream.ack, self.fail,
                         lanes=self.models.lanes)
        self.flow = flow
        flow.start()
        try:
            async for events in stream.take_events(self.settings.max_batch, within=self.settings.max_wait):
                self.last_progress = time.monotonic()
                # Held until delivered: faust's ack on the next take does not commit them (flow.py).
                await flow.put(events)
        finally:
            await flow.stop()

    async def process_serially(self, stream) -> None:
        """One batch at a time (the default): taken, enriched, published, state written; returning
        to take_events acks its events, so their offsets may be committed."""
        async for events in stream.take_events(self.settings.max_batch, within=self.settings.max_wait):
            self.serial_busy, self.last_progress = True, time.monotonic()
            try:
                await self.deliver(events, await self.prepare(events))
            except Exception as err:  # noqa: BLE001 - returning would ack the batch: stop uncommitted
                self.fail(err)
            finally:
                self.serial_busy = False

    @property
    def busy(self) -> bool:
        """Some taken event is not delivered yet (the stall watchdog leaves such a worker alone)."""
        return self.serial_busy or (self.flow is not None and self.flow.busy)

    def fail(self, err: BaseException) -> None:
        """A batch stage failed: stop now, before any held event is acked (nothing is lost: the
        uncommitted events are consumed again after a restart)."""
        log.critical("a batch failed (%s: %s); stopping without committing its offsets, a restart consumes it "
                     "again", type(err).__name__, err, exc_info=err)
        logging.shutdown()
        os._exit(EXIT_BATCH_FAILED)

    async def prepare(self, events: list) -> Prepared:
        """The model stage: parse, read state (with what earlier batches wrote or are about to),
        enrich in the inference thread."""
        batch = [RawEvent(e.message.key, e.message.value, e.message.topic, e.message.partition,
                          e.message.offset, e.message.timestamp) for e in events]
        if log.isEnabledFor(logging.DEBUG):
            spans: dict[int, list[int]] = {}
            for raw in batch:
                spans.setdefault(raw.partition, []).append(raw.offset)
            log.debug("batch of %d: %s", len(batch), {p: (min(o), max(o)) for p, o in sorted(spans.items())})
        for raw in batch:
            self.next_offsets[raw.partition] = max(self.next_offsets.get(raw.partition, 0), raw.offset + 1)
        metrics.EVENTS_CONSUMED.inc(len(batch))
        metrics.BATCH_SIZE.observe(len(batch))
        # State follows the product id of the value, never the record key (which may be absent,
        # undecodable, or name another product).
        parsed = parse_batch(batch, self.limits)
        # Each product's state is written under the (last) event that carried it: its partition.
        carrier = {e.product_id: events[i] for i, e in enumerate(parsed) if isinstance(e, ProductEvent)}
        async with self.lanes.batch(carrier) as pipeline:     # after the earlier batches with these products
            snapshot = {}
            with as_current_event(None):
                for pid in carrier:
                    value = self.unwritten[pid] if pid in self.unwritten else self.state.get(pid.encode("utf-8"))
                    if value is not None:
                        snapshot[pid] = value
            started = time.perf_counter()
            result, observations = await asyncio.get_running_loop().run_in_executor(
                self.lanes.executor, self._enrich, pipeline, batch, parsed, snapshot)
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
            # The next batch may hold the same products before this one's state is written.
            self.unwritten.update(result.state)
        return Prepared(result, observations, carrier)

    async def deliver(self, events: list, prepared: Prepared) -> None:
        """The delivery stage: outputs durable, then state, metrics and drift; the flow acks after."""
        result, observations, carrier = prepared
        failpoint("before_publish")
        await self.publish(result)
        for pid, entry in result.state.items():
            with as_current_event(carrier[pid]):
                self.state[pid.encode("utf-8")] = entry
            if self.unwritten.get(pid) is entry:
                del self.unwritten[pid]
        metrics.count_batch(result)
        await self.observe_drift(observations)
        self.last_progress, self.repairs_since_progress = time.monotonic(), 0
        self.health.batch_done()
        if failpoint("stall_consumer") and not self.stalled_once:
            self.stalled_once = True
            log.warning("failpoint stall_consumer: the consumer's flow stops")
            self.app.consumer.stop_flow()

    async def publish(self, result: BatchResult) -> None:
        """Send every output in input order and wait for the broker's acks (acks=all).

        A send that fails, for any reason, stops this process at once, before the batch's events
        are acked, so that their offsets are never committed. After a restart the batch is consumed again from the committed offsets.
        """
        topics = {ENRICHED: self.settings.enriched_topic, DLQ: self.settings.dlq_topic}
        producer = self.app.producer
        try:
            pending = []
            for out in result.outputs:
                failpoint("fail_send")
                pending.append(await producer.send(topics[out.kind], out.key, out.value, None, None, None))
            await asyncio.wait_for(asyncio.gather(*pending), self.settings.publish_timeout)
        except Exception as err:  # noqa: BLE001 - whatever failed, the batch must not be committed
            log.critical("publishing a batch of %d outputs failed (%s: %s); stopping without committing its "
                         "offsets, a restart consumes it again", len(result.outputs), type(err).__name__, err)
            logging.shutdown()
            os._exit(EXIT_PUBLISH_FAILED)

    async def observe_drift(self, observations: list[TextObservation]) -> None:
        """Feed the drift window; a count window closes at exactly its size, a time window when due."""
        limit = self.drift_config.window_events
        while limit and self.window.texts + len(observations) >= limit:
            room = limit - self.window.texts
            self.window.add(observations[:room])
            observations = observations[room:]
            await self.close_window(time.time())
        self.window.add(observations)
        await self.close_window_if_due()

    async def close_window_if_due(self) -> None:
        now = time.time()
        if self.window.due(now):
            await self.close_window(now)

    async def close_window(self, now: float) -> None:
        """Publish the drift window's report (and its new-tag candidates); start the next window."""
        report, candidates, self.window = self.window.close(now)
        # A reloaded bundle brings its own reference and taxonomy.
        pipeline = self.models.pipeline
        self.window.reference, self.window.covered_types = pipeline.reference, pipeline.taxonomy.covered_types
        source = {"worker": self.worker_id, "model": pipeline.model,
                  "taxonomy": {"name": pipeline.taxonomy.name, "version": pipeline.taxonomy.version}}
        report = {**report, **source}
        metrics.observe_drift(report, len(candidates))
        if report["alert"]:
            log.warning("drift alert (%s) in a window of %d texts", ", ".join(report["alerts"]), report["window"]["texts"])
        # Reports are observations, not part of the delivery promise: sent, not awaited.
        await self.drift_out.send(key=self.worker_id.encode(), value=orjson.dumps(report))
        for candidate in candidates:
            record = {**candidate, "window_end": report["window"]["end"], **source}
            await self.candidates_out.send(key=f"{candidate['type']}:{candidate['key']}".encode(),
                                           value=orjson.dumps(record))

    async def measure_lag(self) -> None:
        """Per assigned input partition: end offset minus the next offset to process (the later of
        what this worker processed and the group's committed offset). Then the stall watchdog."""
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == self.settings.input_topic]
        try:
            # Bounded: with the broker away these calls wait out request timeouts (19 s seen) and
            # the timer falls behind; the next measurement is worth more than a late one.
            ends = await asyncio.wait_for(consumer.highwaters(*tps), LAG_TIMEOUT_SECONDS) if tps else {}
            committed = await asyncio.wait_for(self._committed(tps), LAG_TIMEOUT_SECONDS)
        except (KafkaError, OSError) as err:     # the broker is away: keep the last values, say why
            await self.close_lag_client()
            log.warning("cannot measure consumer lag: %s", str(err) or f"no answer in {LAG_TIMEOUT_SECONDS:.0f} s")
            return
        self.health.kafka_reached()
        assigned, lags = set(), {}
        for tp, end in ends.items():
            if end is None:
                continue
            position = max(self.next_offsets.get(tp.partition, 0), committed.get(tp.partition, 0))
            lags[tp.partition] = max(end - position, 0)
            metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lags[tp.partition])
            assigned.add(str(tp.partition))
        for gone in self.lag_partitions - assigned:          # partitions moved to another worker
            metrics.CONSUMER_LAG.remove(gone)
            self.next_offsets.pop(int(gone), None)
        self.lag_partitions = assigned
        await self._unstall(lags)

    async def _committed(self, tps) -> dict[int, int]:
        """The group's committed offsets, through one admin client kept between calls (not one
        bootstrapped per call); with nothing assigned, a metadata request still tells whether Kafka
        answers (readiness)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                        **kafka_client_options(self.settings))
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        if not tps:
            await self._admin.describe_cluster()
            return {}
        offsets = await self._admin.list_consumer_group_offsets(self.settings.group_id, partitions=tps)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def close_lag_client(self) -> None:
        """At shutdown, and after a failure (the client may be half-connected: the next measurement
        starts afresh)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except (KafkaError, OSError) as err:
                log.debug("closing the lag admin client: %s", err)

    async def heartbeat(self) -> None:
        """A timer on the worker's loop: proves the loop runs, with faust's recovery state."""
        self.health.beat(recovering=not self.app.tables.recovery.completed.is_set(),
                         rebalancing=self.app.rebalancing)

    async def _unstall(self, lags: dict[int, int]) -> None:
        """Watchdog: events are waiting, no batch is in flight, and none came for stall_seconds.

        The repair (``fixups.reseek_stalled_consumer``) redoes what recovery ends with: every input
        partition sought to its committed (or earliest) offset, queues cleared, flow resumed. A
        second stall with no batch in between asks the group for a rebalance, which assigns and
        positions everything afresh. A failing repair is logged; the timer goes on.
        """
        idle = time.monotonic() - self.last_progress
        if not any(lags.values()) or self.busy or idle < self.settings.stall_seconds:
            return
        if self.app.rebalancing or not self.app.tables.recovery.completed.is_set():
            self.last_progress = time.monotonic()    # a rebalance is not a stall; start counting after it
            return
        metrics.STALLS.inc()
        self.health.stalled()                  # not ready until a batch completes again
        self.repairs_since_progress += 1
        try:
            if self.repairs_since_progress > 1:
                log.warning("still no batch after a re-seek (lag %s): asking the group to rebalance", lags)
                await rejoin_group(self.app)
            else:
                await asyncio.wait_for(reseek_stalled_consumer(self.app, self.settings.input_topic, idle, lags),
                                       self.settings.stall_seconds)
        except (KafkaError, IllegalStateError, AssertionError, asyncio.TimeoutError) as err:
            log.warning("the stall repair failed (%s: %s); the next measurement tries again", type(err).__name__, err)
        self.last_progress = time.monotonic()

    def _enrich(self, pipeline, batch, parsed, snapshot) -> tuple[BatchResult, list[TextObservation]]:
        failpoint("slow_inference")
        poison = failpoint("poison_text")
        result = enrich(batch, PoisonedPipeline(pipeline, poison) if poison else pipeline, snapshot,
                        limits=self.limits, worker=self.worker_id, skip_unchanged=self.settings.skip_unchanged,
                        parsed=parsed)
        return result, observe(result)


def observe(result: BatchResult) -> list[TextObservation]:
    """What the drift window needs of each newly tagged title: its tags and token counts, as the
    pipeline found them (nothing is tokenised again). Titles only: the bundle's reference profile is
    made of (labelled) titles too. Re-used tags (unchanged content) are not observed again."""
    out = []
    for event, found in result.tagged:
        for stats in found.texts:
            if stats.field == "title":
                tags = [t for t in found.tags if t.field == "title"]
                out.append(TextObservation(event.product_id, "title", event.title, stats.tokens,
                                           stats.unknown_tokens, tags))
    return out
