"""Drive the `tagstream` command as a user does: a subprocess, its output and exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tagstream(*args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("tagstream", path=str(Path(sys.executable).parent)) or shutil.which("tagstream")
    command = [exe, *args] if exe else [sys.executable, "-m", "stream.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TAGSTREAM_DEBUG", None)
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and run.returncode != 0:
        raise AssertionError(f"tagstream {' '.join(args)} exited {run.returncode}\n{run.stdout}\n{run.stderr}")
    return run


@pytest.fixture
def cli():
    return tagstream


def one_line_error(run: subprocess.CompletedProcess, *needles: str, exit_code: int | None = None,
                   prefix: str = "tagstream") -> None:
    """A failed command said why in one line, with no traceback."""
    assert run.returncode != 0 if exit_code is None else run.returncode == exit_code
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(prefix)
    for needle in needles:
        assert needle in lines[0], lines[0]
