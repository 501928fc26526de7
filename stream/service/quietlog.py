"""Repeated warnings held back and summarised: a broker outage logged thousands of identical lines.

A filter on the log handlers. The first warning of each kind goes through; repeats of it within
the interval are counted instead, and one summary line per interval says how many were held back
and which was the most frequent. A kind silent for a whole interval is forgotten, so the next
outage shows its first line again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from typing import Callable

SUMMARY_LOGGER = "tagstream.quietlog"
# Kafka clients, faust and mode (faust's service framework), and the worker itself.
PREFIXES = ("aiokafka", "faust", "mode", "tagstream")
MAX_KINDS = 1000        # a log line with ever-new text must not grow the table without end
NEVER_HOLD = {"quietlog": False}    # log.warning(..., extra=NEVER_HOLD): always logged
_DIGITS = re.compile(r"\d+")


def kind_of(record: logging.LogRecord) -> tuple[str, int, str]:
    """Logger, level and message template; numbers in the template (offsets, ports, f-strings) do
    not make a new kind."""
    return record.name, record.levelno, _DIGITS.sub("#", str(record.msg))


class QuietFilter(logging.Filter):
    """Lets the first record of each kind through and holds back its repeats within ``interval``."""

    def __init__(self, interval: float, *, level: int = logging.WARNING, prefixes: tuple[str, ...] = PREFIXES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval, self.level, self.prefixes, self.clock = interval, level, prefixes, clock
        self._last_seen: dict[tuple, float] = {}
        self._held: Counter = Counter()
        self._example: dict[tuple, str] = {}
        self._window_start = clock()
        self._lock = threading.Lock()       # records come from the loop and the inference thread

    def _applies(self, record: logging.LogRecord) -> bool:
        # A line that is bounded by its own pace (one per retry) opts out: extra=NEVER_HOLD.
        return (self.interval > 0 and record.levelno >= self.level and record.name != SUMMARY_LOGGER
                and record.name.startswith(self.prefixes) and getattr(record, "quietlog", True))

    def filter(self, record: logging.LogRecord) -> bool:
        # One record reaches every handler the filter is on: decide once, answer the same.
        decided = getattr(record, "_quietlog_pass", None)
        if decided is not None:
            return decided
        summary = None
        if self._applies(record):
            kind, now = kind_of(record), self.clock()
            with self._lock:
                summary = self._roll(now)
                last = self._last_seen.get(kind)
                known_or_room = last is not None or len(self._last_seen) < MAX_KINDS
                passes = known_or_room and (last is None or now - last >= self.interval)
                if known_or_room:
                    self._last_seen[kind] = now
                if not passes:
                    self._held[kind] += 1
                    self._example.setdefault(kind, _first_line(record))
        else:
            passes = True
        record._quietlog_pass = passes
        if summary:
            logging.getLogger(SUMMARY_LOGGER).warning("%s", summary)
        return passes

    def flush(self) -> None:
        """Emit the summary of a finished interval even when no new record arrives to trigger it."""
        with self._lock:
            summary = self._roll(self.clock())
        if summary:
            logging.getLogger(SUMMARY_LOGGER).warning("%s", summary)

    def _roll(self, now: float) -> str | None:
        """At the end of an interval: the summary line (if anything was held), and forget kinds
        that stayed silent for a whole interval. Called with the lock held."""
        if now - self._window_start < self.interval:
            return None
        elapsed, self._window_start = now - self._window_start, now
        self._last_seen = {k: t for k, t in self._last_seen.items() if now - t < self.interval}
        if not self._held:
            return None
        total = sum(self._held.values())
        (kind, count), = self._held.most_common(1)
        summary = (f"held back {total} repeated log lines of {len(self._held)} kinds in the last {elapsed:.0f} s; "
                   f"most frequent ({count}x): {kind[0]} {logging.getLevelName(kind[1])} {self._example[kind]}")
        self._held.clear()
        self._example.clear()
        return summary


def _first_line(record: logging.LogRecord, limit: int = 300) -> str:
    try:
        text = record.getMessage()
    except Exception:   # a record whose arguments do not fit its template is still counted
        text = str(record.msg)
    text = text.splitlines()[0] if text else ""
    return text if len(text) <= limit else text[:limit] + "..."


def install(logger: logging.Logger, quiet: QuietFilter) -> None:
    """Put the filter on the logger's handlers (records from child loggers reach those handlers,
    but not the logger's own filters)."""
    for handler in logger.handlers:
        if quiet not in handler.filters:
            handler.addFilter(quiet)
