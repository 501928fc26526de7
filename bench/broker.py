"""The real Kafka broker for integration tests and benchmarks: started through deploy/kafka/kafka.sh, or given."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

KAFKA_SH = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafka.sh"


def _local_bootstrap() -> str:
    return f"127.0.0.1:{os.environ.get('TAGSTREAM_KAFKA_PORT', '9092')}"


def _kafka_sh(verb: str, timeout: float, *, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
              what: str = "") -> int:
    env = {**os.environ, **(env or {})}
    # The script waits this long for the broker; the subprocess timeout below is only a backstop.
    env.setdefault("TAGSTREAM_KAFKA_START_TIMEOUT", str(int(timeout)))
    try:
        done = subprocess.run(["bash", str(KAFKA_SH), verb], env=env, capture_output=True, text=True,
                              timeout=timeout + 60)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"kafka.sh {verb}{what} did not finish within {timeout + 60:.0f} s") from exc
    if done.returncode not in ok:
        raise RuntimeError(f"kafka.sh {verb}{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.returncode


def ensure_broker(timeout: float = 120) -> str:
    """Bootstrap servers of a running broker; starts the local one unless TAGSTREAM_KAFKA_BOOTSTRAP is set.

    kafka.sh start is idempotent, so calling this from several sessions or fixtures is harmless.
    """
    given = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
    if given:
        return given
    _kafka_sh("start", timeout)
    return _local_bootstrap()


def broker_pid() -> int | None:
    """The local broker's JVM (its pid file, written by kafka.sh), or None when the broker is given
    (TAGSTREAM_KAFKA_BOOTSTRAP) or not running here."""
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        return None
    port = os.environ.get("TAGSTREAM_KAFKA_PORT", "9092")
    data = Path(os.environ.get("TAGSTREAM_KAFKA_DATA") or KAFKA_SH.parent / "data" / f"port-{port}")
    try:
        pid = int((data / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").is_dir() else None


def broker_restart(timeout: float = 120) -> str:
    """Stop the local broker (cleanly) and start it again on the same data; for fault tests."""
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        raise RuntimeError("broker_restart needs the local broker; TAGSTREAM_KAFKA_BOOTSTRAP points elsewhere")
    _kafka_sh("restart", timeout)
    return _local_bootstrap()


def broker_crash_and_start(down_seconds: float = 3.0, timeout: float = 120) -> str:
    """SIGKILL the local broker (no clean shutdown, as a crash), wait, start it on the same data."""
    import time

    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        raise RuntimeError("broker_crash_and_start needs the local broker; TAGSTREAM_KAFKA_BOOTSTRAP points elsewhere")
    _kafka_sh("kill", timeout)
    time.sleep(down_seconds)
    _kafka_sh("start", timeout)
    return _local_bootstrap()


def unique_name(prefix: str) -> str:
    """A topic or group name no other test (or earlier run against the same broker) has used."""
    # Kafka topic names allow [a-zA-Z0-9._-]; '.' and '_' collide in metric names, so only '-'.
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# A second local broker for the security tests, beside the main one: its own ports and data. Clients
# authenticate with SCRAM-SHA-512 on its SASL port; the PLAINTEXT port is for the broker itself.
SASL_USER = "tagstream"
SASL_PASSWORD = "tagstream-s3cret-pw"
_SASL_PORTS = {"plaintext": 9392, "controller": 9393, "sasl": 9394}
_SASL_ENV = {
    "TAGSTREAM_KAFKA_PORT": str(_SASL_PORTS["plaintext"]),
    "TAGSTREAM_KAFKA_CONTROLLER_PORT": str(_SASL_PORTS["controller"]),
    "TAGSTREAM_KAFKA_SASL_PORT": str(_SASL_PORTS["sasl"]),
    "TAGSTREAM_KAFKA_DATA": str(KAFKA_SH.parent / "data" / f"port-{_SASL_PORTS['plaintext']}-sasl"),
    "TAGSTREAM_KAFKA_SCRAM_USERS": f"{SASL_USER}:{SASL_PASSWORD}",
}
_STORAGE_LACKS_USERS = 4  # kafka.sh start's exit status: storage (or a running broker) set up otherwise


def _sasl_kafka_sh(verb: str, timeout: float, ok: tuple[int, ...] = (0,)) -> int:
    return _kafka_sh(verb, timeout, env=_SASL_ENV, ok=ok, what=" (SASL broker)")


def ensure_sasl_broker(timeout: float = 120) -> tuple[str, str]:
    """(PLAINTEXT, SASL_PLAINTEXT) bootstrap servers of the local SCRAM broker, started if needed.

    The SCRAM user is created only when the storage is formatted, so storage formatted without it
    (or with another password) is wiped first; it is test data.
    """
    if _sasl_kafka_sh("start", timeout, ok=(0, _STORAGE_LACKS_USERS)) == _STORAGE_LACKS_USERS:
        _sasl_kafka_sh("reset", timeout)
        _sasl_kafka_sh("start", timeout)
    return f"127.0.0.1:{_SASL_PORTS['plaintext']}", f"127.0.0.1:{_SASL_PORTS['sasl']}"


def stop_sasl_broker(timeout: float = 60) -> None:
    """Stop the SCRAM broker, keeping its data (and user) for the next start."""
    _sasl_kafka_sh("stop", timeout)
