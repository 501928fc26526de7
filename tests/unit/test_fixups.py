"""fixups.batch_fetches on stand-ins for faust's consumer: set when the fetcher is there, refused otherwise."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream.service.fixups import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, batch_fetches
from stream.service.settings import Settings


def app_with(fetcher) -> SimpleNamespace:
    return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher))))


def test_the_running_fetcher_gets_the_sizes():
    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    assert batch_fetches(app_with(fetcher))
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)


def test_the_worker_sets_its_fetch_wait_on_each_assignment():
    """The fetch_max_wait setting (seconds) reaches the fetcher in milliseconds; the default is the fixup's."""
    from stream.service.worker import EnrichmentWorker

    for settings, wait_ms in ((Settings.from_env({}, fetch_max_wait=0.25), 250), (Settings.from_env({}), FETCH_MAX_WAIT_MS)):
        fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
        worker = SimpleNamespace(app=app_with(fetcher), settings=settings)
        asyncio.run(EnrichmentWorker.on_assigned(worker, None, set()))
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (FETCH_MIN_BYTES, wait_ms)


def test_unknown_internals_change_nothing():
    assert not batch_fetches(app_with(None))
    assert not batch_fetches(SimpleNamespace(consumer=SimpleNamespace()))
    other = SimpleNamespace(min_bytes=1)
    assert not batch_fetches(app_with(other)) and other.min_bytes == 1
