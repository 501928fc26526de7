"""Integration fixtures: the real broker (started once per session) and per-test topics."""

from __future__ import annotations

import pytest

from tests.kafka_broker import ensure_broker
from tests.streaming import Topics


@pytest.fixture(scope="session")
def kafka():
    return ensure_broker()


@pytest.fixture
def topics():
    return Topics()
