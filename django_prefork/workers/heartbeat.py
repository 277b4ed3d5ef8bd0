"""The heartbeat a worker beats and the master watches: one unlinked temp file per worker.

A worker proves it is alive by changing the file's ctime (fchmod, no data written); the master
compares that ctime with the clock. One byte at offset 0 says "booted and serving", so the
master can tell a worker that is still importing Django from one that is stuck, and can wait
for new workers to be ready before retiring old ones on reload.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

_READY = b"R"


def _tmp_dir() -> str | None:
    # A tmpfs keeps heartbeats off disk (and away from overlay filesystems in containers).
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return None


class Heartbeat:
    """Both ends of the heartbeat: the master creates it, the worker inherits the fd."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd, path = tempfile.mkstemp(prefix="django-prefork-", dir=_tmp_dir())
            os.unlink(path)
        self.fd = fd
        self._mode = 0

    # worker side
    def beat(self) -> None:
        self._mode ^= 1
        os.fchmod(self.fd, self._mode)

    def mark_ready(self) -> None:
        os.pwrite(self.fd, _READY, 0)
        self.beat()

    # master side
    def last_beat(self) -> float:
        return os.fstat(self.fd).st_ctime

    def is_ready(self) -> bool:
        try:
            return os.pread(self.fd, 1, 0) == _READY
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
