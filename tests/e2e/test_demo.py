"""`tagstream demo` as a first-time user runs it: bounded, then interrupted with Ctrl-C; nothing
it started may be left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from bench.broker import ensure_broker
from bench.harness import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:         # a zombie is gone for our purposes
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    pytest.importorskip("torch")
    return tmp_path_factory.mktemp("demo-cache")


def _demo(cache, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "demo", "--cache", str(cache), "--metrics-port",
                             str(free_port()), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def test_a_bounded_demo_trains_once_enriches_every_event_and_leaves_nothing_running(demo_cache):
    ensure_broker()
    first = _demo(demo_cache, "--events", "150", "--rate", "60")
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert "training the demo model" in out and "kafka: using the broker" in out
    assert "done: enriched 150/150" in out, out[-3000:]
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", out)
    assert re.search(r"\[(brand|category|color|style|size|material):[^\]]+\]", out), "tags highlighted in a title"
    assert re.search(r"enriched \d+/\d+ sent \| +\d+\.\d events/s \| latency p50", out)
    assert "drift ok" in out or "drift ALERT" in out, "a drift summary"
    pid = int(re.search(r"worker: pid (\d+)", out).group(1))
    assert f"worker: stopped (pid {pid})" in out and not _alive(pid)

    started = time.monotonic()
    second = _demo(demo_cache, "--events", "40", "--rate", "80")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0 and "using the cached demo model" in out and "training" not in out
    assert "done: enriched 40/40" in out
    print(f"second run: {time.monotonic() - started:.0f} s end to end, model from the cache")


def test_ctrl_c_stops_the_demo_and_everything_it_started(demo_cache):
    ensure_broker()
    demo = _demo(demo_cache, "--rate", "30", start_new_session=True)
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        lines.append(line)
        if line.startswith("enriched ") and not line.startswith("enriched 0/"):
            break
    pid = int(re.search(r"worker: pid (\d+)", "".join(lines)).group(1))
    assert _alive(pid)
    os.killpg(demo.pid, signal.SIGINT)              # Ctrl-C reaches the whole foreground group
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130, out[-2000:]
    assert "interrupted: stopping what the demo started" in out and f"worker: stopped (pid {pid})" in out
    assert not _alive(pid)
