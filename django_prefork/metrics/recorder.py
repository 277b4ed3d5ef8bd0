"""A worker's side of the metrics: count each request on the board, and send StatsD.

The HTTP core calls `request_started()` and `request_finished(...)` around every request it
runs (http/connection.py, where the access log is written) and `connection_accepted()` for
every connection it is given: one place for every worker class. The budget is 1 µs of CPU
per request (docs/observability.md has the figures), so the calls are a few stores each:
no allocation beyond Python's ints, and no lock: every thread that records has a slot of
its own.
"""

from __future__ import annotations

import logging
import struct
import sys
import threading
from bisect import bisect_left
from typing import Any

from .board import (
    ACCEPTED,
    BUCKETS,
    CURRENT_LINE_BYTES,
    CURRENT_START,
    DURATION_SUM,
    LABEL0,
    LABEL_INTS,
    LABELS,
    OVERFLOW_KEY,
    RESPONSE_BYTES,
    SLOTS,
    STARTED,
    MetricsBoard,
    label_key,
)
from .statsd import StatsdClient, count_log_records

log = logging.getLogger("django_prefork.error")

#: The slot's "serving now" words: the start (a float), then the request line, NUL-padded
#: (or cut) to CURRENT_LINE_BYTES by struct itself: one C call per request start.
_SERVING = struct.Struct(f"d{CURRENT_LINE_BYTES}s")
#: pack_serving(spot[0], spot[1], started, request line bytes): show a request in a slot.
pack_serving = _SERVING.pack_into
#: Where a slot shows its current request, as the worker's RequestTracker writes it
#: (workers/inflight.py): (the board's mmap, the byte offset for pack_serving, the board's
#: float view, the index of the start word there: 0.0 = serving nothing). A tuple, not an
#: object: the tracker unpacks it on every request, and the cost counts (bench/serving_now.py).
ServingSpot = tuple[Any, int, Any, int]

#: Most (method, status line) pairs a worker remembers the board block of; past that the
#: block is looked up again each time (a status line is the app's free text).
_MAX_REMEMBERED = 512


class RequestRecorder:
    """Counts into one slot of the metrics board (one thread: sync, gevent, or one thread of
    a gthread worker), and/or sends StatsD; never raises."""

    #: One slot for every thread or greenlet of the worker.
    per_thread = False

    def __init__(self, board: MetricsBoard | None, base: int | None,
                 statsd: StatsdClient | None) -> None:
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
        self._serving = base + CURRENT_START
        self._raw: Any = board._map if on_board else None  # type: ignore[union-attr]
        self._serving_offset = self._serving * 8

    def connection_accepted(self) -> None:
        ints = self._ints
        if ints is not None:
            ints[self._accepted] += 1

    def request_started(self) -> RequestRecorder:
        """A request begins; call `request_finished` on what this returns (the slot it
        counts in: this one)."""
        ints = self._ints
        if ints is not None:
            ints[self._started] += 1
        return self

    def serving_spot(self) -> ServingSpot | None:
        """Where this slot shows the request it serves now (see ServingSpot), or None."""
        if self._floats is None:
            return None
        return (self._raw, self._serving_offset, self._floats, self._serving)

    def request_finished(self, method: str, status: str, sent: int, seconds: float) -> None:
        """One request done: `status` is the status line ("200 OK"), `sent` the body bytes."""
        ints = self._ints
        if ints is not None:
            block = self._blocks.get((method, status)) or self._block_for(method, status)
            # The bucket count last: a scrape that sees the request counted sees its bytes
            # and its duration too (and requests in flight never go below zero).
            ints[self._bytes] += sent
            self._floats[self._duration] += seconds
            ints[block + bisect_left(BUCKETS, seconds)] += 1
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


class _LockedLane(RequestRecorder):
    """A slot several threads share (when the board has no slot left for one of its own):
    `+=` on the board is a read and a write, which two threads could interleave."""

    def __init__(self, board: MetricsBoard, base: int, statsd: StatsdClient | None) -> None:
        super().__init__(board, base, statsd)
        self._lock = threading.Lock()

    def connection_accepted(self) -> None:
        with self._lock:
            super().connection_accepted()

    def request_started(self) -> RequestRecorder:
        with self._lock:
            super().request_started()
        return self

    def request_finished(self, method: str, status: str, sent: int, seconds: float) -> None:
        with self._lock:  # (the StatsD send too: it never waits, the socket is non-blocking)
            super().request_finished(method, status, sent, seconds)


class ThreadedRecorder:
    """The recorder of a gthread worker: each thread counts into a slot of its own (a lane,
    claimed on its first call), so no thread waits for a lock; the master sums the slots of
    a pid as one worker's. A thread finding no free slot shares a locked one."""

    def __init__(self, board: MetricsBoard, pid: int, shared_base: int,
                 statsd: StatsdClient | None) -> None:
        self.board = board
        self.pid = pid
        self.statsd = statsd
        self._shared = _LockedLane(board, shared_base, statsd)
        self._local = threading.local()

    def _lane(self) -> RequestRecorder:
        base = self.board.join(self.pid)
        lane = RequestRecorder(self.board, base, self.statsd) if base is not None else (
            self._shared)
        self._local.lane = lane
        return lane

    def connection_accepted(self) -> None:
        try:
            lane = self._local.lane
        except AttributeError:
            lane = self._lane()
        lane.connection_accepted()

    def request_started(self) -> RequestRecorder:
        """Count the start in this thread's lane and return the lane, which the HTTP core
        then tells of the end: the lane is looked up once per request, not twice."""
        try:
            lane: RequestRecorder = self._local.lane
        except AttributeError:
            lane = self._lane()
        return lane.request_started()

    #: Each thread has a spot of its own: ask serving_spot() from each thread.
    per_thread = True

    def serving_spot(self) -> ServingSpot | None:
        """The calling thread's lane's spot."""
        try:
            lane: RequestRecorder = self._local.lane
        except AttributeError:
            lane = self._lane()
        return lane.serving_spot()


def make_recorder(cfg: Any, board_fd: int | None, pid: int,
                  multithread: bool) -> RequestRecorder | ThreadedRecorder | None:
    """The recorder a worker's HTTP core should use, or None when nothing is measured.

    `board_fd` is the load board's descriptor, at whose end the master placed the metrics
    board if metrics are on (board.py).
    """
    board = MetricsBoard.attach(board_fd) if board_fd is not None else None
    base = board.join(pid) if board is not None else None
    if board is not None and base is None:
        log.warning("Metrics board full (%s slots): worker %s is not counted", SLOTS, pid)
    statsd = StatsdClient.from_config(cfg)
    count_log_records(statsd)
    if board is None or base is None:
        if board is not None:
            board.close()
        return RequestRecorder(None, None, statsd) if statsd is not None else None
    if multithread and not _greenlets_only():
        return ThreadedRecorder(board, pid, base, statsd)
    return RequestRecorder(board, base, statsd)


def _greenlets_only() -> bool:
    """A gevent worker (threading patched): its "threads" are greenlets, and a lane per
    greenlet would claim a board slot per connection (the board is full after 256); one
    slot without a lock is safe there, since no greenlet switch happens inside a store."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))
