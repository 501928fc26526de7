"""The log filter that turns a broker outage's flood of repeated warnings into a few lines."""

from __future__ import annotations

import logging

import pytest

from stream.service.quietlog import NEVER_HOLD, SUMMARY_LOGGER, QuietFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.name} {r.getMessage()}" for r in self.records]


@pytest.fixture
def logs():
    """A handler on the root logger with the filter on it, as the worker installs it; a fake clock."""
    clock, handler = Clock(), Collect()
    quiet = QuietFilter(10.0, clock=clock)
    root = logging.getLogger()
    root.addHandler(handler)
    install(root, quiet)            # only handlers of root: the filter lands on ours and on pytest's
    old_level, root.level = root.level, logging.DEBUG
    yield clock, quiet, handler
    root.level = old_level
    for h in root.handlers:
        h.removeFilter(quiet)
    root.removeHandler(handler)


def _outage(clock: Clock, seconds: int, per_second: int) -> int:
    """What aiokafka, faust and the worker log while the broker is away, with ever-changing numbers."""
    conn, fetch, worker = (logging.getLogger(n) for n in ("aiokafka.conn", "faust.transport.drivers.aiokafka",
                                                          "tagstream.worker"))
    logged = 0
    for second in range(seconds * 10):
        clock.now += 0.1
        for i in range(per_second // 10):
            conn.error("Unable connect to node with id %d: [Errno 111] Connect call failed ('127.0.0.1', %d)",
                       1, 9092 + i % 3)
            fetch.warning(f"Fetch request for partition {i % 4} failed at offset {second * 100 + i}")
            logged += 2
        if second % 50 == 0:
            worker.warning("cannot measure consumer lag: %s", "KafkaConnectionError")
            logged += 1
    return logged


def test_a_flood_of_repeats_becomes_the_first_line_of_each_kind_and_one_summary_per_interval(logs):
    clock, quiet, handler = logs
    logged = _outage(clock, seconds=24, per_second=60)
    clock.now += 10                                          # the broker is back; the last interval ends
    quiet.flush()
    assert logged > 2_800
    summaries = [r for r in handler.records if r.name == SUMMARY_LOGGER]
    others = [r for r in handler.records if r.name != SUMMARY_LOGGER]
    assert [r.name for r in others] == ["aiokafka.conn", "faust.transport.drivers.aiokafka", "tagstream.worker"]
    assert len(summaries) == 3, handler.lines()              # 24 s at one summary per 10 s
    held = sum(int(r.getMessage().split()[2]) for r in summaries)
    assert held + len(others) == logged                      # nothing vanishes uncounted
    first = summaries[0].getMessage()
    assert "held back" in first and "most frequent" in first and "Unable connect to node" in first


def test_a_kind_silent_for_an_interval_shows_its_first_line_again(logs):
    clock, quiet, handler = logs
    log = logging.getLogger("aiokafka.conn")
    for _ in range(5):
        clock.now += 1
        log.error("Unable connect to node %d", 1)
    clock.now += 30                                          # the broker came back; later it goes again
    log.error("Unable connect to node %d", 1)
    lines = [line for line in handler.lines() if line.startswith("aiokafka")]
    assert lines == ["aiokafka.conn Unable connect to node 1"] * 2


def test_info_lines_other_loggers_and_opted_out_lines_pass_untouched(logs):
    clock, quiet, handler = logs
    for _ in range(20):
        logging.getLogger("faust.worker").info("[^Worker]: Ready")
        logging.getLogger("urllib3.connectionpool").warning("Retrying")
        logging.getLogger("tagstream.topics").warning("Kafka unreachable (attempt %d)", 3, extra=NEVER_HOLD)
    quiet.flush()
    clock.now += 11
    quiet.flush()
    assert len(handler.records) == 60
    assert not [r for r in handler.records if r.name == SUMMARY_LOGGER]


def test_an_interval_of_zero_logs_every_line():
    quiet = QuietFilter(0)
    records = [logging.makeLogRecord({"name": "aiokafka", "levelno": logging.ERROR, "msg": "Unable to bootstrap"})
               for _ in range(10)]
    assert all(quiet.filter(r) for r in records)


def test_one_record_gets_one_decision_on_every_handler(logs):
    clock, quiet, handler = logs
    second = Collect()
    second.addFilter(quiet)
    logging.getLogger().addHandler(second)
    try:
        for _ in range(3):
            logging.getLogger("aiokafka").error("Unable to bootstrap")
    finally:
        logging.getLogger().removeHandler(second)
    assert len(second.records) == len([r for r in handler.records if r.name == "aiokafka"]) == 1


def test_the_summary_comes_without_a_new_line_to_trigger_it(logs):
    clock, quiet, handler = logs
    for _ in range(4):
        logging.getLogger("aiokafka").error("Unable to bootstrap")
    quiet.flush()
    assert not [r for r in handler.records if r.name == SUMMARY_LOGGER]      # the interval is not over
    clock.now += 10
    quiet.flush()
    (summary,) = [r.getMessage() for r in handler.records if r.name == SUMMARY_LOGGER]
    assert summary.startswith("held back 3 repeated log lines of 1 kinds") and "(3x): aiokafka ERROR" in summary
