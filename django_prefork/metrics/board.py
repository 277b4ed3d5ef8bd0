"""The metrics board: every worker's request counters, in memory the master can read.

Grown from the load board (workers/loadboard.py): it lives in the same shared file, past the
load board's pages, so it reaches every worker however the worker was started (forked, from
a zygote, or exec'd), because each of those already receives the load board's descriptor.
The master grows the file when metrics are on; a worker finds the region at the file's end
(checked by a magic number), and records nothing when there is none.

Layout, in native 64-bit ints: a header (magic, slots ever used), then SLOTS slots of
SLOT_INTS each. One worker writes its own slot only, so every update is a plain store of an
aligned int (a reader sees the old value or the new one); the master reads all slots when
scraped. A worker claims a slot (pid stored last) under the shared file's lock when it
starts; the master folds a slot into its running totals when it reaps that worker and then
frees it, so counters survive restarts without the worker having to do anything on the way
out (a SIGKILLed worker has no way out).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Ceiling of workers at one time, as the load board's.
SLOTS = 256
MAGIC = 0x70726566_6F726B31  # "prefork1"
HEADER_INTS = 8
#: Upper bounds of the request duration histogram, in seconds (1 ms .. 60 s), then +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)

# Offsets inside one slot.
PID = 0
IN_FLIGHT = 1
ACCEPTED = 2
RESPONSE_BYTES = 3
DURATION_US = 4  # sum of request durations, in microseconds (ints only on the board)
BUCKET0 = 5  # len(BUCKETS) + 1 counts (the last one: above 60 s), not cumulative
LABEL0 = BUCKET0 + len(BUCKETS) + 1
#: (key, count) pairs, one per (method, status) a worker has seen. Methods are limited to
#: METHODS and statuses to 100-599, so a worker rarely needs more than a dozen; past
#: LABELS - 1 distinct pairs the rest is counted as method="other", status="other".
LABELS = 48
SLOT_INTS = 128
assert LABEL0 + 2 * LABELS <= SLOT_INTS

_INT = 8
_PAGE = mmap.PAGESIZE
REGION_BYTES = -(-(HEADER_INTS + SLOTS * SLOT_INTS) * _INT // _PAGE) * _PAGE

#: Methods counted under their own name; any other is "other", so a client cannot grow the
#: label set (RFC 9110 §9 methods, plus PATCH from RFC 5789).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
           "other")
METHOD_INDEX = {name: index for index, name in enumerate(METHODS[:-1])}
OTHER_METHOD = len(METHODS) - 1
OTHER_STATUS = 0


def label_key(method: str, status: str) -> int:
    """The board's int for a (method, status line) pair, never 0 (0 = free entry)."""
    code = status[:3]
    number = int(code) if code.isdigit() and len(status) >= 3 else 0
    if not 100 <= number <= 599:
        number = OTHER_STATUS
    return 1 + METHOD_INDEX.get(method, OTHER_METHOD) * 1000 + number


def split_key(key: int) -> tuple[str, str]:
    """(method, status) labels of a board key."""
    method, number = divmod(key - 1, 1000)
    return METHODS[method], str(number) if number else "other"


OVERFLOW_KEY = 1 + OTHER_METHOD * 1000 + OTHER_STATUS


@dataclass
class Totals:
    """Counters summed over workers (alive and folded-in dead ones) at one moment."""

    accepted: int = 0
    response_bytes: int = 0
    duration_us: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    in_flight: int = 0
    busy_workers: int = 0

    def add_slot(self, ints: memoryview, base: int) -> None:
        self.accepted += ints[base + ACCEPTED]
        self.response_bytes += ints[base + RESPONSE_BYTES]
        self.duration_us += ints[base + DURATION_US]
        buckets = self.buckets
        for i in range(len(buckets)):
            buckets[i] += ints[base + BUCKET0 + i]
        requests = self.requests
        for entry in range(base + LABEL0, base + LABEL0 + 2 * LABELS, 2):
            key = ints[entry]
            if not key:
                break  # entries are claimed in order
            labels = split_key(key)
            requests[labels] = requests.get(labels, 0) + ints[entry + 1]

    def copy(self) -> Totals:
        return Totals(self.accepted, self.response_bytes, self.duration_us,
                      list(self.buckets), dict(self.requests))


class MetricsBoard:
    """The shared region. `create(fd)` in the master; `attach(fd)` in a worker."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, REGION_BYTES, offset=offset)
        self.ints = memoryview(self._map).cast("q")
        #: The master's sum of the slots of workers it reaped.
        self.retired = Totals()

    @classmethod
    def create(cls, fd: int) -> MetricsBoard:
        """Grow the shared file by the metrics region, page-aligned after what it holds."""
        size = os.fstat(fd).st_size
        offset = -(-size // _PAGE) * _PAGE
        os.ftruncate(fd, offset + REGION_BYTES)
        board = cls(fd, offset)
        board.ints[0] = MAGIC
        return board

    @classmethod
    def attach(cls, fd: int) -> MetricsBoard | None:
        """The region the master made at the end of the shared file, or None (metrics off)."""
        size = os.fstat(fd).st_size
        offset = size - REGION_BYTES
        if offset <= 0 or offset % _PAGE:
            return None
        board = cls(fd, offset)
        if board.ints[0] != MAGIC:
            board.close()
            return None
        return board

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- worker side -----------------------------------------------------------------------
    def join(self, pid: int) -> int | None:
        """Claim a zeroed slot for `pid`; its first int's index, or None if all are taken."""
        ints = self.ints
        with self._locked():
            for slot in range(SLOTS):
                base = HEADER_INTS + slot * SLOT_INTS
                if ints[base + PID] in (0, pid):
                    for i in range(base + 1, base + SLOT_INTS):
                        ints[i] = 0
                    ints[base + PID] = pid
                    if slot >= ints[1]:
                        ints[1] = slot + 1
                    return base
        return None

    # -- master side -----------------------------------------------------------------------
    def _slots(self) -> Iterator[int]:
        for slot in range(min(self.ints[1], SLOTS)):
            yield HEADER_INTS + slot * SLOT_INTS

    def fold(self, pid: int) -> bool:
        """A reaped worker: add its counts to the running totals and free its slot."""
        ints = self.ints
        with self._locked():
            for base in self._slots():
                if ints[base + PID] == pid:
                    self.retired.add_slot(ints, base)
                    for i in range(base, base + SLOT_INTS):
                        ints[i] = 0
                    return True
        return False

    def totals(self) -> Totals:
        """Everything counted so far: reaped workers' counts plus the live slots."""
        totals = self.retired.copy()
        ints = self.ints
        for base in self._slots():
            if ints[base + PID]:
                totals.add_slot(ints, base)
                in_flight = ints[base + IN_FLIGHT]
                if in_flight > 0:
                    totals.in_flight += in_flight
                    totals.busy_workers += 1
        return totals

    def close(self) -> None:
        self.ints.release()
        self._map.close()
