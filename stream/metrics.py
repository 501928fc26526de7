"""Prometheus metrics of the worker, declared once here (names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

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
