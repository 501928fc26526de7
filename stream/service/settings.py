"""One frozen, typed settings object per worker process.

Every field has a default, an environment variable (``TAGSTREAM_<NAME>``) and help text; a
CLI flag of the same name overrides the environment. Secrets are masked in every rendering.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping


def setting(default: Any, help: str, *, secret: bool = False, choices: tuple[str, ...] | None = None, **rules: Any):
    """A field with its help; ``rules`` say what a command-line option of it accepts (``minimum``,
    ``above``, ``below``: see stream/cli/options.py)."""
    return field(default=default, metadata={"help": help, "secret": secret, "choices": choices, **rules})


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its variable."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers, comma separated")
    input_topic: str = setting("products.updates", "topic of product create/update/delete events")
    enriched_topic: str = setting("products.enriched", "compacted topic of tag-enriched products")
    dlq_topic: str = setting("products.dlq", "dead-letter topic for events that cannot be enriched")
    drift_topic: str = setting("tagstream.drift", "windowed taxonomy-drift reports")
    candidates_topic: str = setting("tagstream.taxonomy-candidates", "proposed new taxonomy entries")
    partitions: int = setting(4, "partitions of topics the worker creates (input, enriched, state)")
    replication: int = setting(1, "replication factor of topics the worker creates")
    group_id: str = setting("tagstream-worker", "consumer group (and Faust app id) shared by all workers")
    max_batch: int = setting(64, "most events per micro-batch")
    max_wait: float = setting(0.05, "seconds to wait for a micro-batch to fill")
    bundle: str = setting("models", "model bundle directory, or a model store whose CURRENT pointer is watched")
    variant: str = setting("fp32", "model variant to serve; auto: int8 on a CPU with VNNI when the bundle has one, "
                                   "else fp32", choices=("fp32", "int8", "fp16", "auto"))
    device: str = setting("auto", "where inference runs", choices=("auto", "cpu", "cuda"))
    threads: int = setting(0, "ONNX Runtime intra-op threads per batch (0: one per core, shared among the lanes)")
    lanes: int = setting(2, "batches in the model at once, each on its own inference thread (with pipeline); "
                            "their outputs keep the order the batches were taken")
    reload_interval: float = setting(2.0, "seconds between checks of the bundle pointer")
    session_timeout: float = setting(30.0, "seconds before the group gives a silent (crashed) worker's partitions away")
    stall_seconds: float = setting(30.0, "seconds with events waiting and no batch before the consumer is re-seeked")
    max_event_bytes: int = setting(1_048_576, "events larger than this are dead-lettered")
    max_field_chars: int = setting(20_000, "titles or descriptions longer than this are dead-lettered")
    max_tags_per_field: int = setting(32, "most tags per field in an enriched record (the most confident are kept)")
    max_output_bytes: int = setting(1_000_000, "an enriched record larger than this is dead-lettered as "
                                               "output_too_large; keep it below the topics' max.message.bytes")
    dlq_value_prefix_bytes: int = setting(4096, "a dead letter carries at most this many bytes of the original "
                                                "key and value (plus their full length and sha256)")
    max_product_id_chars: int = setting(256, "events whose product_id is longer than this are dead-lettered")
    key_policy: str = setting("strict", "strict: a record whose key is absent, not UTF-8 or not the value's "
                                        "product_id is dead-lettered (key_mismatch); value: such records are "
                                        "accepted and follow the value's product_id", choices=("strict", "value"))
    instance_id: str = setting("", "stable id of this worker for static group membership (KIP-345): a restarted "
                                   "worker with the same id takes its partitions back at once ('': dynamic)")
    publish_timeout: float = setting(60.0, "seconds to wait for the broker to acknowledge a batch's outputs; "
                                           "past it the worker stops without committing the batch")
    producer_linger: float = setting(0.005, "seconds the producer waits to gather a batch's outputs into one produce "
                                            "request (0: send at once; each request costs the broker and the worker "
                                            "CPU on shared cores)")
    producer_batch_bytes: int = setting(262_144, "most bytes of records per partition in one produce request "
                                                 "(at most 1000000: one request)")
    fetch_max_wait: float = setting(0.02, "seconds the broker may hold a fetch until 64 KiB of input are there, in "
                                          "(0, 1]: a longer wait polls less once the input is read up (less broker "
                                          "CPU) and adds up to that much latency under a trickle")
    store: str = setting("rocksdb", "where per-product state lives: rocksdb (on disk under data_dir, the "
                                    "changelog topic as backup) or memory (replayed from the changelog at start)",
                         choices=("rocksdb", "memory"))
    pipeline: bool = setting(True, "overlap the model with taking and publishing batches (stream/service/flow.py); "
                                   "false: one batch at a time")
    skip_unchanged: bool = setting(True, "re-use the last tags when title and description are unchanged "
                                         "(false: every upsert goes through the model)")
    metrics_port: int = setting(9464, "port of the Prometheus /metrics endpoint and the /healthz and /readyz "
                                      "probes (0: none)")
    data_dir: str = setting(".tagstream", "worker state directory (Faust tables)")
    security_protocol: str = setting("PLAINTEXT", "Kafka security protocol",
                                     choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    sasl_mechanism: str = setting("PLAIN", "SASL mechanism", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    sasl_username: str = setting("", "SASL user name")
    sasl_password: str = setting("", "SASL password", secret=True)
    ssl_cafile: str = setting("", "CA certificate file for SSL")
    ssl_certfile: str = setting("", "client certificate file for SSL")
    ssl_keyfile: str = setting("", "client key file for SSL", secret=False)
    drift_window_events: int = setting(1000, "close a drift window after this many enriched events (0: by time only)")
    drift_window_seconds: float = setting(60.0, "close a drift window this many seconds after it opened (0: by count only)")
    drift_min_texts: int = setting(50, "a drift window with fewer texts is reported but never alerts")
    drift_psi_threshold: float = setting(0.2, "alert when a tag-type or top-value PSI exceeds this")
    drift_js_threshold: float = setting(0.1, "alert when a tag-type or top-value Jensen-Shannon divergence exceeds this")
    drift_oot_threshold: float = setting(0.5, "alert when the out-of-taxonomy share of spans exceeds this")
    candidate_min_count: int = setting(5, "an out-of-taxonomy value seen this often in a window is a candidate ...")
    candidate_min_share: float = setting(0.01, "... if it is in at least this share of the window's products")
    log_level: str = setting("info", "worker log level", choices=("debug", "info", "warning", "error"))
    log_summary_seconds: float = setting(10.0, "a warning repeated within this many seconds is held back; one line per "
                                               "interval counts what was held (0: log every line)")
    kafka_wait_seconds: float = setting(120.0, "at start, retry an unreachable Kafka this long (backoff, one line per "
                                               "attempt) before exiting with an error (0: one attempt)")
    strict_partitions: bool = setting(False, "refuse to start when the input topic has fewer partitions than "
                                             "--partitions (false: warn; workers beyond its partitions sit idle)")
    liveness_seconds: float = setting(30.0, "/healthz fails when the worker's event loop has not run for this long")
    readiness_kafka_seconds: float = setting(30.0, "/readyz fails when no lag measurement has reached Kafka for "
                                                   "this long")

    @staticmethod
    def env_name(name: str) -> str:
        return f"TAGSTREAM_{name.upper()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``TAGSTREAM_*`` variables, then explicit overrides (CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = overrides.get(f.name)
            source = f"--{f.name.replace('_', '-')}"
            if raw is None and cls.env_name(f.name) in environ:
                raw, source = environ[cls.env_name(f.name)], cls.env_name(f.name)
            if raw is None:
                continue
            values[f.name] = _convert(f, raw, source)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("partitions", "replication", "max_batch", "lanes", "max_event_bytes", "max_field_chars",
                     "max_tags_per_field", "max_output_bytes", "dlq_value_prefix_bytes", "max_product_id_chars"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{self.env_name(name)} must be at least 1, got {getattr(self, name)}")
        if not 6 <= self.session_timeout <= 300:
            raise SettingsError(f"{self.env_name('session_timeout')} must be in [6, 300] (the broker's limits), "
                                f"got {self.session_timeout}")
        if self.drift_window_events < 0 or self.drift_window_seconds < 0 or not (
                self.drift_window_events or self.drift_window_seconds):
            raise SettingsError("TAGSTREAM_DRIFT_WINDOW_EVENTS and TAGSTREAM_DRIFT_WINDOW_SECONDS must be >= 0, "
                                "and not both 0")
        if not 0 <= self.producer_linger < 1:
            raise SettingsError(f"{self.env_name('producer_linger')} must be in [0, 1) seconds, "
                                f"got {self.producer_linger}")
        if not 1024 <= self.producer_batch_bytes <= 1_000_000:     # a batch fits in one request (1 MB)
            raise SettingsError(f"{self.env_name('producer_batch_bytes')} must be in [1024, 1000000], "
                                f"got {self.producer_batch_bytes}")
        if not 0 < self.fetch_max_wait <= 1:
            raise SettingsError(f"{self.env_name('fetch_max_wait')} must be in (0, 1] seconds, got {self.fetch_max_wait}")
        if self.max_wait <= 0:
            raise SettingsError(f"{self.env_name('max_wait')} must be positive, got {self.max_wait}")
        for name in ("log_summary_seconds", "kafka_wait_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{self.env_name(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("liveness_seconds", "readiness_kafka_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{self.env_name(name)} must be positive, got {getattr(self, name)}")
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise SettingsError(f"{self.security_protocol} needs TAGSTREAM_SASL_USERNAME and TAGSTREAM_SASL_PASSWORD")

    def public(self) -> dict[str, Any]:
        """Every setting, secrets masked: safe to log or print."""
        return {f.name: ("***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name))
                for f in fields(self)}

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.public().items()) + ")"

    __str__ = __repr__

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(setting, environment variable, default, help) for docs and `--help`."""
        return [(f.name, cls.env_name(f.name), repr(f.default) if f.default is not MISSING else "",
                 f.metadata["help"]) for f in fields(cls)]


# bool("false") is True: variables and flags are strings, so booleans are spelled out.
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _convert(f, raw: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
    if kind is bool:
        value = raw if isinstance(raw, bool) else _BOOLEANS.get(str(raw).strip().lower())
        if value is None:
            raise SettingsError(f"{source}: expected true or false, got {raw!r}")
        return value
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: expected {kind.__name__}, got {raw!r}") from None
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise SettingsError(f"{source}: expected one of {', '.join(choices)}, got {value!r}")
    return value
