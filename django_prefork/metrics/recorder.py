"""A worker's side of the metrics: count each request on the board, and send StatsD.

The HTTP core calls `request_started()` and `request_finished(...)` around every request it
runs (http/connection.py, where the access log is written) and `connection_accepted()` for
every connection it is given: one place for every worker class. The cost per request is
measured in docs/observability.md (the budget: 1 µs of CPU).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from .board import (
    ACCEPTED,
    BUCKET0,
    BUCKETS,
    DURATION_US,
    IN_FLIGHT,
    LABEL0,
    LABELS,
    OVERFLOW_KEY,
    RESPONSE_BYTES,
    MetricsBoard,
    label_key,
)
from .statsd import StatsdClient, count_log_records

#: Most (method, status line) pairs a worker remembers the board entry of; past that the
#: entry is looked up again each time (a status line is the app's free text).
_MAX_REMEMBERED = 512


class RequestRecorder:
    """Counts into one slot of the metrics board, and/or sends StatsD; never raises."""

    def __init__(self, board: MetricsBoard | None, base: int | None,
                 statsd: StatsdClient | None, multithread: bool) -> None:
        self.board = board
        self._ints: Any = board.ints if board is not None and base is not None else None
        self._base = base or 0
        self.statsd = statsd
        self._entries: dict[tuple[str, str], int] = {}
        # Threads of one gthread worker share the slot: `+=` on the board is a read and a
        # write, which two threads could interleave. Greenlets and the sync worker cannot.
        self._lock = threading.Lock() if multithread and self._ints is not None else None

    def connection_accepted(self) -> None:
        ints = self._ints
        if ints is not None:
            index = self._base + ACCEPTED
            lock = self._lock
            if lock is None:
                ints[index] += 1
            else:
                with lock:
                    ints[index] += 1

    def request_started(self) -> None:
        ints = self._ints
        if ints is not None:
            index = self._base + IN_FLIGHT
            lock = self._lock
            if lock is None:
                ints[index] += 1
            else:
                with lock:
                    ints[index] += 1

    def request_finished(self, method: str, status: str, sent: int, seconds: float) -> None:
        """One request done: `status` is the status line ("200 OK"), `sent` the body bytes."""
        ints = self._ints
        if ints is not None:
            entry = self._entries.get((method, status))
            if entry is None:
                entry = self._entry_for(method, status)
            base = self._base
            bucket = base + BUCKET0 + bisect_left(BUCKETS, seconds)
            micros = int(seconds * 1_000_000)
            lock = self._lock
            if lock is None:
                ints[base + IN_FLIGHT] -= 1
                ints[entry] += 1
                ints[bucket] += 1
                ints[base + DURATION_US] += micros
                ints[base + RESPONSE_BYTES] += sent
            else:
                with lock:
                    ints[base + IN_FLIGHT] -= 1
                    ints[entry] += 1
                    ints[bucket] += 1
                    ints[base + DURATION_US] += micros
                    ints[base + RESPONSE_BYTES] += sent
        statsd = self.statsd
        if statsd is not None:
            statsd.request(status, seconds)

    def _entry_for(self, method: str, status: str) -> int:
        """The count's index for a pair: its entry in our slot, claimed on first sight."""
        lock = self._lock
        if lock is None:
            return self._claim(method, status)
        with lock:
            return self._claim(method, status)

    def _claim(self, method: str, status: str) -> int:
        key = label_key(method, status)
        ints = self._ints
        first = self._base + LABEL0
        last = first + 2 * (LABELS - 1)  # the final entry is kept for the overflow
        index = first
        while index < last:
            found = ints[index]
            if found == key:
                break
            if not found:
                ints[index + 1] = 0
                ints[index] = key  # after its count: a reader never sees a stale count
                break
            index += 2
        else:
            ints[last] = OVERFLOW_KEY
            index = last
        if len(self._entries) < _MAX_REMEMBERED:
            self._entries[(method, status)] = index + 1
        return index + 1


def make_recorder(cfg: Any, board_fd: int | None, pid: int,
                  multithread: bool) -> RequestRecorder | None:
    """The recorder a worker's HTTP core should use, or None when nothing is measured.

    `board_fd` is the load board's descriptor, at whose end the master placed the metrics
    board if metrics are on (board.py).
    """
    board = MetricsBoard.attach(board_fd) if board_fd is not None else None
    base = board.join(pid) if board is not None else None
    statsd = StatsdClient.from_config(cfg)
    count_log_records(statsd)
    if base is None and statsd is None:
        if board is not None:
            board.close()
        return None
    return RequestRecorder(board, base, statsd, multithread)
