"""The pidfile: written at start, removed at stop, never left pointing at someone else."""

from __future__ import annotations

import contextlib
import os
import tempfile


class PidfileError(Exception):
    """Another live server owns the pidfile; str() is one line."""


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid: int | None = None

    def create(self, pid: int) -> None:
        other = self.read_live_pid()
        if other is not None and other != pid:
            raise PidfileError(f"pidfile {self.path} belongs to running process {other}")
        directory = os.path.dirname(self.path)
        # Written atomically so a reader never sees a half-written number.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pid-")
        with os.fdopen(fd, "w") as f:
            f.write(f"{pid}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        self.pid = pid

    def rename(self, path: str) -> None:
        """Move our file to path (a new master taking PIDFILE over from PIDFILE.2)."""
        path = os.path.abspath(path)
        if self.pid is not None:  # not yet written: it will be created at the new path
            os.replace(self.path, path)
        self.path = path

    def unlink(self) -> None:
        """Remove the file only if it still names us (a newer master may have taken it)."""
        with contextlib.suppress(OSError, ValueError), open(self.path) as f:
            if int(f.read().strip() or 0) == self.pid:
                os.unlink(self.path)

    def read_live_pid(self) -> int | None:
        try:
            with open(self.path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid
