"""The load board: how many connections each worker holds, in memory all workers share.

All workers accept from the same listening sockets, and the kernel hands a new connection to
whichever worker calls accept() first: often the one already busiest, since it is the one
running. With the board a worker sees, before it accepts, whether another worker holds fewer
connections, and then leaves the connection to that one for a moment (docs/workers.md,
"Fair accept"). A blind rule ("defer while loaded") made every worker wait even when all were
equally loaded: gthread with `Connection: close` on every request ran at 0.41x gunicorn's.

One shared mapping (a memfd, else an unlinked file in /dev/shm), created by the master and
inherited by every worker like the listening sockets. Layout, in native ints: [0] the number
of slots ever used, then one (pid, connections) pair per slot. A worker claims a free slot
when it starts accepting (under a file lock) and leaves it when it stops; the master frees
the slot of a worker it reaps (one that died without leaving). Each update is one aligned
int store, and a reader only compares numbers: a stale value costs one deferred accept,
never a lost connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import tempfile
from collections.abc import Iterator

SLOTS = 256
_INT = 4
_SIZE = (1 + 2 * SLOTS) * _INT
#: Published by a worker that cannot take another connection (at worker_connections).
FULL = 1 << 30
#: How long a worker leaves a new connection to a less loaded one before it takes it after
#: all (so that none waits in the backlog while every worker is busy). 2 ms made gthread with
#: Connection: close wait on every accept (docs/workers.md, "Fair accept").
ACCEPT_BACKOFF = 0.0005
#: A gthread worker defers a new connection only while it holds at least this many
#: connections per thread. Measured on 2 workers x 4 threads, 50 clients (docs/workers.md,
#: "Fair accept"): backoff 2 ms, floor 2: Connection: close 7,300 req/s; 0.5 ms and 4:
#: 17,600 req/s (one worker alone: 17,000), keep-alive Django hello still 51:49. Without
#: backoff: 100:0.
GTHREAD_FLOOR_PER_THREAD = 4
#: A gevent worker defers only while it holds at least this many connections (short
#: connections must not wait on noise).
GEVENT_FLOOR = 16


class FairAccept:
    """The fair-accept decision of one worker: defer a new connection once, while another
    worker on the board holds fewer, then take it if it is still there (a connection must
    not starve in the backlog while every worker is busy). How the worker waits out
    ACCEPT_BACKOFF is its own business."""

    def __init__(self, board: LoadBoard, floor: int) -> None:
        self.board = board
        self.floor = floor
        self._deferred = False

    def defer(self, connections: int) -> bool:
        """True: leave the next connection for ACCEPT_BACKOFF, then ask again."""
        if not self._deferred and self.board.someone_less_loaded(connections, self.floor):
            self._deferred = True
            return True
        self._deferred = False
        return False


class LoadBoard:
    """The master creates it (`LoadBoard()`); a worker started as a fresh interpreter maps
    the inherited fd (`LoadBoard(fd)`); a forked worker keeps the mapping it inherited."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = _new_shared_fd()
            os.ftruncate(fd, _SIZE)
        self.fd = fd
        self._map = mmap.mmap(fd, _SIZE)
        self._ints = memoryview(self._map).cast("i")
        self._load_index = 0  # this worker's connections entry; 0 until join()

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.fd)

    # -- worker side -----------------------------------------------------------------------
    def join(self, pid: int) -> None:
        """Claim a slot for `pid` (with 0 connections); without a free one, stay off the
        board (the worker is then never preferred, and defers to no one)."""
        ints = self._ints
        with self._locked():
            for slot in range(SLOTS):
                if ints[1 + 2 * slot] in (0, pid):
                    ints[2 + 2 * slot] = 0
                    ints[1 + 2 * slot] = pid
                    if slot >= ints[0]:
                        ints[0] = slot + 1
                    self._load_index = 2 + 2 * slot
                    return

    def publish(self, connections: int) -> None:
        if self._load_index:
            self._ints[self._load_index] = connections

    def someone_less_loaded(self, connections: int, floor: int = 0) -> bool:
        """Whether another worker on the board holds at least two connections fewer; never
        while we hold fewer than `floor`.

        The floor keeps short connections out of it: with `Connection: close` on every
        request a worker holds a handful, the counts differ by a few from moment to moment,
        and deferring on such noise left new connections waiting in the backlog while every
        worker deferred to another (gthread, 2 workers: 2,300 req/s with no floor, 17,000
        with one worker alone).
        """
        mine = self._load_index
        if not mine or connections < floor:
            return False
        ints = self._ints
        below = connections - 1
        for index in range(2, 2 + 2 * ints[0], 2):
            if index != mine and ints[index] < below and ints[index - 1]:
                return True
        return False

    def leave(self) -> None:
        """Off the board: a draining worker must not be waited for."""
        index = self._load_index
        if index:
            self._load_index = 0
            with self._locked():
                self._ints[index] = 0
                self._ints[index - 1] = 0

    # -- master side -----------------------------------------------------------------------
    def forget(self, pid: int) -> None:
        """Free the slot of a worker that exited (it may not have left)."""
        ints = self._ints
        with self._locked():
            for slot in range(ints[0]):
                if ints[1 + 2 * slot] == pid:
                    ints[2 + 2 * slot] = 0
                    ints[1 + 2 * slot] = 0

    def loads(self) -> dict[int, int]:
        """{pid: connections} of the workers on the board (for tests and debugging)."""
        ints = self._ints
        return {ints[1 + 2 * s]: ints[2 + 2 * s] for s in range(ints[0]) if ints[1 + 2 * s]}

    def close(self) -> None:
        self._ints.release()
        self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


@contextlib.contextmanager
def locked(fd: int) -> Iterator[None]:
    """The shared file's one lock (a record lock on the whole file), taken by the load board
    and the metrics board (metrics/board.py) alike: they live in the same file."""
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def _new_shared_fd() -> int:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        with contextlib.suppress(OSError):
            fd: int = memfd_create("django-prefork-load", os.MFD_CLOEXEC)
            return fd
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="django-prefork-load-", dir=shm)
    os.unlink(path)
    return fd
