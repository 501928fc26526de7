"""Prometheus metrics of the worker, declared once here (names follow Prometheus conventions)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, Info

from stream.service.enrich import DLQ, BatchResult

EVENTS_CONSUMED = Counter("tagstream_events_consumed_total", "Input events taken from Kafka")
EVENTS_ENRICHED = Counter("tagstream_events_enriched_total", "Enriched records (and tombstones) acknowledged by the broker")
EVENTS_DEAD_LETTERED = Counter("tagstream_events_dead_lettered_total", "Events sent to the dead-letter topic", ["code"])
EVENTS_SKIPPED = Counter("tagstream_events_skipped_total", "Events not sent through the model", ["reason"])
MODEL_TEXTS = Counter("tagstream_model_products_total", "Products sent through the model")
BATCH_SIZE = Histogram("tagstream_batch_size_events", "Events per micro-batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
INFERENCE_SECONDS = Histogram("tagstream_inference_seconds", "Time to enrich one micro-batch (model included)",
                              buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
END_TO_END_SECONDS = Histogram("tagstream_end_to_end_latency_seconds",
                               "From the input record's timestamp to the broker's ack of the output",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
MODEL_RELOADS = Counter("tagstream_model_reloads_total", "Bundle hot reloads", ["outcome"])
MODEL_INFO = Info("tagstream_model", "The model bundle serving now")
LAST_BATCH_UNIX = Gauge("tagstream_last_batch_timestamp_seconds", "When the last batch was published")
CONSUMER_LAG = Gauge("tagstream_consumer_lag_events", "Input events not yet processed, per assigned partition",
                     ["partition"])
STALLS = Counter("tagstream_consumer_stalls_total",
                 "Times the watchdog found events waiting, nothing delivered, and re-seeked the consumer")
DRIFT_WINDOWS = Counter("tagstream_drift_windows_total", "Drift windows closed and reported", ["alert"])
DRIFT_DIVERGENCE = Gauge("tagstream_drift_divergence", "Last window's divergence from the bundle's reference",
                         ["distribution", "measure"])
DRIFT_OUT_OF_TAXONOMY = Gauge("tagstream_drift_out_of_taxonomy_ratio", "Last window's share of spans with no taxonomy node")
DRIFT_CONFIDENCE = Gauge("tagstream_drift_confidence_mean", "Last window's mean span confidence")
DRIFT_UNKNOWN_TOKENS = Gauge("tagstream_drift_unknown_token_ratio", "Last window's share of [UNK] sub-tokens")
DRIFT_NO_TAGS = Gauge("tagstream_drift_no_tag_ratio", "Last window's share of texts with no tag")
DRIFT_LENGTH_SHIFT = Gauge("tagstream_drift_text_length_shift_ratio", "Last window's mean text length / reference - 1")
DRIFT_ALERT = Gauge("tagstream_drift_alert", "1 if the last window crossed a drift threshold")
TAXONOMY_CANDIDATES = Counter("tagstream_taxonomy_candidates_total", "Out-of-taxonomy values proposed as new nodes")


def observe_drift(report: dict, candidates: int) -> None:
    """Set the drift gauges from a window's report."""
    m = report["metrics"]
    for distribution in ("tag_type", "top_value"):
        for measure in ("psi", "js"):
            if f"{distribution}_{measure}" in m:
                DRIFT_DIVERGENCE.labels(distribution, measure).set(m[f"{distribution}_{measure}"])
    DRIFT_OUT_OF_TAXONOMY.set(m["out_of_taxonomy_rate"])
    if m["confidence"]["mean"] is not None:
        DRIFT_CONFIDENCE.set(m["confidence"]["mean"])
    DRIFT_UNKNOWN_TOKENS.set(m["unknown_token_rate"])
    DRIFT_NO_TAGS.set(m["no_tag_share"])
    DRIFT_LENGTH_SHIFT.set(m["text_length_shift"])
    DRIFT_ALERT.set(1 if report["alert"] else 0)
    DRIFT_WINDOWS.labels("true" if report["alert"] else "false").inc()
    TAXONOMY_CANDIDATES.inc(candidates)


def count_batch(result: BatchResult) -> None:
    """Every metric of a batch whose outputs the broker has acknowledged, in one call."""
    now = time.time()
    for out in result.outputs:
        if out.source.timestamp_ms:
            END_TO_END_SECONDS.observe(max(0.0, now - out.source.timestamp_ms / 1000))
        if out.kind == DLQ:
            EVENTS_DEAD_LETTERED.labels(out.code).inc()
    counts = result.counts
    EVENTS_ENRICHED.inc(counts["enriched"] + counts["deleted"])
    MODEL_TEXTS.inc(result.texts_tagged)
    for reason in ("stale", "unchanged"):
        if counts[f"skipped_{reason}"]:
            EVENTS_SKIPPED.labels(reason).inc(counts[f"skipped_{reason}"])
    LAST_BATCH_UNIX.set(now)
