"""The real Kafka broker for integration tests: started through deploy/kafka/kafka.sh, or given."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

KAFKA_SH = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafka.sh"


def _local_bootstrap() -> str:
    return f"127.0.0.1:{os.environ.get('TAGSTREAM_KAFKA_PORT', '9092')}"


def _kafka_sh(verb: str, timeout: float) -> None:
    env = dict(os.environ)
    # The script waits this long for the broker; the subprocess timeout below is only a backstop.
    env.setdefault("TAGSTREAM_KAFKA_START_TIMEOUT", str(int(timeout)))
    try:
        done = subprocess.run(["bash", str(KAFKA_SH), verb], env=env, capture_output=True, text=True,
                              timeout=timeout + 60)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"kafka.sh {verb} did not finish within {timeout + 60:.0f} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"kafka.sh {verb} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def ensure_broker(timeout: float = 120) -> str:
    """Bootstrap servers of a running broker; starts the local one unless TAGSTREAM_KAFKA_BOOTSTRAP is set.

    kafka.sh start is idempotent, so calling this from several sessions or fixtures is harmless.
    """
    given = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
    if given:
        return given
    _kafka_sh("start", timeout)
    return _local_bootstrap()


def broker_restart(timeout: float = 120) -> str:
    """Stop the local broker (cleanly) and start it again on the same data; for fault tests."""
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        raise RuntimeError("broker_restart needs the local broker; TAGSTREAM_KAFKA_BOOTSTRAP points elsewhere")
    _kafka_sh("restart", timeout)
    return _local_bootstrap()


def unique_name(prefix: str) -> str:
    """A topic or group name no other test (or earlier run against the same broker) has used."""
    # Kafka topic names allow [a-zA-Z0-9._-]; '.' and '_' collide in metric names, so only '-'.
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
