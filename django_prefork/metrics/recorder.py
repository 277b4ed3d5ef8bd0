"""A worker's side of the metrics: count each request on the board, and send StatsD.

The HTTP core calls `request_started()` and `request_finished(...)` around every request it
runs (http/connection.py, where the access log is written) and `connection_accepted()` for
every connection it is given: one place for every worker class. The budget is 1 µs of CPU
per request (docs/observability.md has the figures), so the calls are a few stores each:
no allocation beyond Python's ints, no lock where only one thread records.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from .board import (
    ACCEPTED,
    BUCKETS,
    DURATION_SUM,
    LABEL0,
    LABEL_INTS,
    LABELS,
    OVERFLOW_KEY,
    RESPONSE_BYTES,
    STARTED,
    MetricsBoard,
    label_key,
)
from .statsd import StatsdClient, count_log_records

#: Most (method, status line) pairs a worker remembers the board block of; past that the
#: block is looked up again each time (a status line is the app's free text).
_MAX_REMEMBERED = 512


class RequestRecorder:
    """Counts into one slot of the metrics board, and/or sends StatsD; never raises."""

    def __init__(self, board: MetricsBoard | None, base: int | None,
                 statsd: StatsdClient | None, multithread: bool) -> None:
        self.board = board
        on_board = board is not None and base is not None
        self._ints: Any = board.ints if on_board else None  # type: ignore[union-attr]
        self._floats: Any = board.floats if on_board else None  # type: ignore[union-attr]
        base = base or 0
        self._accepted = base + ACCEPTED
        self._started = base + STARTED
        self._bytes = base + RESPONSE_BYTES
        self._duration = base + DURATION_SUM
        self._first_block = base + LABEL0
        self.statsd = statsd
        #: (method, status line) -> index of the block's first bucket count
        self._blocks: dict[tuple[str, str], int] = {}
        # Threads of one gthread worker share the slot: `+=` on the board is a read and a
        # write, which two threads could interleave. Greenlets and the sync worker cannot.
        self._lock = threading.Lock() if multithread and on_board else None
        if self._lock is not None:
            self._acquire = self._lock.acquire
            self._release = self._lock.release
            self.connection_accepted = self._locked_accepted  # type: ignore[method-assign]
            self.request_started = self._locked_started  # type: ignore[method-assign]
            self.request_finished = self._locked_finished  # type: ignore[method-assign]

    # -- one thread (sync, gevent) ---------------------------------------------------------
    def connection_accepted(self) -> None:
        ints = self._ints
        if ints is not None:
            ints[self._accepted] += 1

    def request_started(self) -> None:
        ints = self._ints
        if ints is not None:
            ints[self._started] += 1

    def request_finished(self, method: str, status: str, sent: int, seconds: float) -> None:
        """One request done: `status` is the status line ("200 OK"), `sent` the body bytes."""
        ints = self._ints
        if ints is not None:
            block = self._blocks.get((method, status)) or self._block_for(method, status)
            ints[block + bisect_left(BUCKETS, seconds)] += 1
            ints[self._bytes] += sent
            self._floats[self._duration] += seconds
        if self.statsd is not None:
            self.statsd.request(status, seconds)

    # -- threads (gthread) -----------------------------------------------------------------
    # acquire()/release() rather than `with`: two C calls, no context-manager protocol (the
    # lock is most of a gthread worker's cost per request, docs/observability.md).
    def _locked_accepted(self) -> None:
        self._acquire()
        try:
            self._ints[self._accepted] += 1
        finally:
            self._release()

    def _locked_started(self) -> None:
        self._acquire()
        try:
            self._ints[self._started] += 1
        finally:
            self._release()

    def _locked_finished(self, method: str, status: str, sent: int, seconds: float) -> None:
        ints = self._ints
        bucket = bisect_left(BUCKETS, seconds)
        self._acquire()
        try:
            block = self._blocks.get((method, status)) or self._block_for(method, status)
            ints[block + bucket] += 1
            ints[self._bytes] += sent
            self._floats[self._duration] += seconds
        finally:
            self._release()
        if self.statsd is not None:
            self.statsd.request(status, seconds)

    # -- a pair seen for the first time ----------------------------------------------------
    def _block_for(self, method: str, status: str) -> int:
        """The pair's block in our slot, claimed on first sight; its first count's index."""
        key = label_key(method, status)
        ints = self._ints
        block = self._first_block
        last = block + (LABELS - 1) * LABEL_INTS  # the final block is kept for the overflow
        while block < last:
            found = ints[block]
            if found == key:
                break
            if not found:
                ints[block] = key  # its counts are zero since the slot was claimed
                break
            block += LABEL_INTS
        else:
            ints[last] = OVERFLOW_KEY
        if len(self._blocks) < _MAX_REMEMBERED:
            self._blocks[(method, status)] = block + 1
        return block + 1


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
