"""fixups.batch_fetches on stand-ins for faust's consumer: set when the fetcher is there, refused otherwise."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream.service.fixups import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, IDLE_FETCH_MAX_WAIT_MS, batch_fetches


def app_with(fetcher) -> SimpleNamespace:
    return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher))))


def fetcher_answering(*answers: bool) -> SimpleNamespace:
    """A fetcher whose request coroutine says, request after request, whether records came."""
    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500, requests=[])
    replies = iter(answers)

    async def proc(assignment, node_id, request):
        fetcher.requests.append((request, fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms))
        return next(replies)

    fetcher._proc_fetch_request = proc
    return fetcher


def test_the_running_fetcher_gets_the_sizes():
    fetcher = fetcher_answering()
    assert batch_fetches(app_with(fetcher))
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)


def test_a_fetch_that_brings_nothing_switches_to_waiting_for_the_first_record_and_records_switch_back():
    fetcher = fetcher_answering(True, False, False, True, True)
    app = app_with(fetcher)
    assert batch_fetches(app) and batch_fetches(app)      # a second assignment: wrapped once, not twice
    batching, idle = (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS), (1, IDLE_FETCH_MAX_WAIT_MS)

    async def fetch_five() -> list:
        modes = []
        for n in range(5):
            got = await fetcher._proc_fetch_request(None, 0, f"request {n}")
            modes.append((got, (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)))
        return modes

    modes = asyncio.run(fetch_five())
    assert modes == [(True, batching), (False, idle), (False, idle), (True, batching), (True, batching)]
    # Each request went out once, built with the mode the previous answer chose.
    assert [(r, (b, w)) for r, b, w in fetcher.requests] == [(f"request {n}", mode) for n, mode in
                                                            enumerate([batching, batching, idle, idle, batching])]


def test_unknown_internals_change_nothing():
    assert not batch_fetches(app_with(None))
    assert not batch_fetches(SimpleNamespace(consumer=SimpleNamespace()))
    other = SimpleNamespace(min_bytes=1)
    assert not batch_fetches(app_with(other)) and other.min_bytes == 1
    no_requests = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    assert not batch_fetches(app_with(no_requests)) and no_requests._fetch_min_bytes == 1
