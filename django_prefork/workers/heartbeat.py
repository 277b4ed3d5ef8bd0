"""The heartbeat a worker beats and the master watches: one unlinked temp file per worker.

A worker proves it is alive by changing the file's ctime (fchmod, no data written); the master
compares that ctime with the clock. One byte at offset 0 says "booted and serving", so the
master can tell a worker that is still importing Django from one that is stuck, and can wait
for new workers to be ready before retiring old ones on reload. With ``--reload`` the rest
of the file carries the worker's import reports (`workers/importwatch.py`).

The master creates the file (in ``worker_tmp_dir``) and the worker inherits the fd. Only the
file's owner may fchmod it, so with ``user``/``group`` set the master gives it to the
workers' user, as gunicorn does with its WorkerTmp.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

_READY = b"R"


def _tmp_dir() -> str | None:
    # A tmpfs keeps heartbeats off disk (and away from overlay filesystems in containers).
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return None


class Heartbeat:
    """Both ends of the heartbeat: the master creates it, the worker inherits the fd."""

    def __init__(self, fd: int | None = None, *, directory: str | None = None,
                 owner: tuple[int, int] | None = None) -> None:
        """fd: the inherited one (worker side); else a new file in ``directory`` (None:
        /dev/shm when writable, else the temp dir), chowned to ``owner`` (uid, gid)."""
        if fd is None:
            fd, path = tempfile.mkstemp(prefix="django-prefork-", dir=directory or _tmp_dir())
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
            except OSError:
                os.close(fd)
                raise
            finally:
                os.unlink(path)
        self.fd = fd
        self._mode = 0

    @classmethod
    def for_worker(cls, cfg: Any) -> Heartbeat:
        """A new heartbeat for a worker that runs with ``cfg`` (its worker_tmp_dir, its
        user and group)."""
        from django_prefork.server.privileges import worker_ids

        owner = worker_ids(cfg) if os.geteuid() == 0 else None
        return cls(directory=getattr(cfg, "worker_tmp_dir", None), owner=owner)

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
