"""fixups.batch_fetches on stand-ins for faust's consumer: set when the fetcher is there, refused otherwise."""

from __future__ import annotations

from types import SimpleNamespace

from stream.service.fixups import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, batch_fetches


def app_with(fetcher) -> SimpleNamespace:
    return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher))))


def test_the_running_fetcher_gets_the_sizes():
    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    assert batch_fetches(app_with(fetcher))
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)


def test_unknown_internals_change_nothing():
    assert not batch_fetches(app_with(None))
    assert not batch_fetches(SimpleNamespace(consumer=SimpleNamespace()))
    other = SimpleNamespace(min_bytes=1)
    assert not batch_fetches(app_with(other)) and other.min_bytes == 1
