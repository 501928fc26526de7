"""Integration fixtures: the real broker (started once per session) and per-test topics."""

from __future__ import annotations

import pytest

from bench.broker import ensure_broker
from bench.harness import Topics


@pytest.fixture(scope="session")
def kafka():
    return ensure_broker()


@pytest.fixture
def topics():
    return Topics()
