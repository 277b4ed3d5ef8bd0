"""The metrics board: every worker's request counters, in memory the master can read.

Grown from the load board (workers/loadboard.py): it lives in the same shared file, past the
load board's pages, so it reaches every worker however the worker was started (forked, from
a zygote, or exec'd), because each of those already receives the load board's descriptor.
The master grows the file when metrics are on; a worker finds the region at the file's end
(checked by a magic number), and records nothing when there is none.

Layout, in native 64-bit words: a header (magic, slots ever used), then SLOTS slots of
SLOT_INTS each. One worker writes its own slot only, so every update is a plain store of an
aligned word (a reader sees the old value or the new one); the master reads all slots when
scraped. The layout keeps the stores per request few (docs/observability.md): a request
adds to one histogram bucket of its (method, status) pair, whose sum is the pair's count;
requests in flight are those started minus those counted; the duration sum is a float word.
A worker claims a slot (pid stored last) under the shared file's lock when it
starts; the master folds a slot into its running totals when it reaps that worker and then
frees it, so counters survive restarts without the worker having to do anything on the way
out (a SIGKILLed worker has no way out).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from django_prefork.workers.loadboard import locked

#: Ceiling of workers at one time, as the load board's.
SLOTS = 256
MAGIC = 0x70726566_6F726B31  # "prefork1"
HEADER_INTS = 8
#: Header word the master sets to 0 when it stops taking traffic (/-/ready on the main
#: bind reads it in the workers: health.py).
READY = 2
#: Upper bounds of the request duration histogram, in seconds (1 ms .. 60 s), then +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)

# Offsets inside one slot.
PID = 0
STARTED = 1  # requests begun (in flight = STARTED - requests counted)
ACCEPTED = 2
RESPONSE_BYTES = 3
DURATION_SUM = 4  # seconds, a float (read through the board's "d" view)
LABEL0 = 5
#: One block per (method, status) a worker has seen: its key, then a count per histogram
#: bucket (len(BUCKETS) + 1, the last one above 60 s; not cumulative). Methods are limited
#: to METHODS and statuses to 100-599, so a worker rarely needs more than a dozen blocks;
#: past LABELS - 1 distinct pairs the rest is counted as method="other", status="other".
LABEL_INTS = 1 + len(BUCKETS) + 1
LABELS = 40
#: The request the slot's thread serves now, for `preforkctl status`: its start
#: (time.monotonic(), the same clock in every process; a float, 0.0 = none), then its request
#: line, NUL-padded, in CURRENT_LINE_BYTES. Written with one struct.pack_into per request
#: start and one store at its end (recorder.py), read without a lock: a reader racing a
#: write may see a line cut short, never memory outside the slot.
CURRENT_START = LABEL0 + LABELS * LABEL_INTS
CURRENT_LINE = CURRENT_START + 1
CURRENT_LINE_BYTES = 128
SLOT_INTS = CURRENT_LINE + CURRENT_LINE_BYTES // 8

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
    duration_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    in_flight: int = 0
    busy_workers: int = 0

    def add_slot(self, ints: memoryview[int], floats: memoryview[float], base: int) -> int:
        """Add one slot's counters; return how many requests it counted."""
        self.accepted += ints[base + ACCEPTED]
        self.response_bytes += ints[base + RESPONSE_BYTES]
        self.duration_sum += floats[base + DURATION_SUM]
        buckets = self.buckets
        requests = self.requests
        counted = 0
        for block in range(base + LABEL0, base + LABEL0 + LABELS * LABEL_INTS, LABEL_INTS):
            key = ints[block]
            if not key:
                break  # blocks are claimed in order
            counts = ints[block + 1:block + LABEL_INTS].tolist()
            for i, count in enumerate(counts):
                buckets[i] += count
            labels = split_key(key)
            total = sum(counts)
            requests[labels] = requests.get(labels, 0) + total
            counted += total
        return counted

    def copy(self) -> Totals:
        return Totals(self.accepted, self.response_bytes, self.duration_sum,
                      list(self.buckets), dict(self.requests))


@dataclass
class WorkerCounts:
    """One live worker on the board: requests counted, requests in flight, and
    (request line, time.monotonic() at its start) for each request a slot shows now."""

    requests: int = 0
    in_flight: int = 0
    serving: list[tuple[str, float]] = field(default_factory=list)


class MetricsBoard:
    """The shared region. `create(fd)` in the master; `attach(fd)` in a worker."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, REGION_BYTES, offset=offset)
        self.ints = memoryview(self._map).cast("q")
        self.floats = memoryview(self._map).cast("d")
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
        board.ints[READY] = 1
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

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.fd)

    # -- worker side -----------------------------------------------------------------------
    def join(self, pid: int) -> int | None:
        """Claim a free slot for `pid`, zeroed; its first word's index, or None if all are
        taken. A worker may claim several (one per thread: recorder.py); the master folds
        them all when it reaps the worker."""
        ints = self.ints
        with self._locked():
            for slot in range(SLOTS):
                base = HEADER_INTS + slot * SLOT_INTS
                if not ints[base + PID]:
                    for i in range(base + 1, base + SLOT_INTS):
                        ints[i] = 0
                    ints[base + PID] = pid
                    if slot >= ints[1]:
                        ints[1] = slot + 1
                    return base
        return None

    # -- master side -----------------------------------------------------------------------
    def set_ready(self, ready: bool) -> None:
        self.ints[READY] = 1 if ready else 0

    def ready(self) -> bool:
        return bool(self.ints[READY])

    def _slots(self) -> Iterator[int]:
        for slot in range(min(self.ints[1], SLOTS)):
            yield HEADER_INTS + slot * SLOT_INTS

    def fold(self, pid: int) -> int:
        """A reaped worker: add its counts to the running totals and free its slots; return
        how many it held."""
        ints = self.ints
        folded = 0
        with self._locked():
            for base in self._slots():
                if ints[base + PID] == pid:
                    self.retired.add_slot(ints, self.floats, base)
                    for i in range(base, base + SLOT_INTS):
                        ints[i] = 0
                    folded += 1
        return folded

    def totals(self) -> Totals:
        """Everything counted so far: reaped workers' counts plus the live slots."""
        totals = self.retired.copy()
        ints = self.ints
        busy = set()
        for base in self._slots():
            pid = ints[base + PID]
            if pid:
                started = ints[base + STARTED]  # before the counts; a negative result is clamped
                in_flight = started - totals.add_slot(ints, self.floats, base)
                if in_flight > 0:
                    totals.in_flight += in_flight
                    busy.add(pid)
        totals.busy_workers = len(busy)
        return totals

    def workers(self) -> dict[int, WorkerCounts]:
        """Per live worker pid: requests served and in flight, and what its threads serve
        now (for `preforkctl status`; the master reads, the workers write)."""
        ints = self.ints
        floats = self.floats
        out: dict[int, WorkerCounts] = {}
        scratch = Totals()
        for base in self._slots():
            pid = ints[base + PID]
            if not pid:
                continue
            counts = out.get(pid)
            if counts is None:
                counts = out[pid] = WorkerCounts()
            started = ints[base + STARTED]
            served = scratch.add_slot(ints, floats, base)
            counts.requests += served
            counts.in_flight += max(0, started - served)
            since = floats[base + CURRENT_START]
            if since:
                offset = (base + CURRENT_LINE) * _INT
                line = self._map[offset:offset + CURRENT_LINE_BYTES].split(b"\0", 1)[0]
                counts.serving.append((line.decode("latin-1"), since))
        return out

    def close(self) -> None:
        self.ints.release()
        self.floats.release()
        self._map.close()
