"""capture_output and enable_stdio_inheritance: what happens to a process's fds 1 and 2.

gunicorn's ``--capture-output`` points stdout and stderr (the file descriptors, so C
extensions and subprocesses are caught too) at the error log file, and does it again when the
logs are reopened (USR1). Each process that runs ``configure_logging`` (the master, the
zygote, every worker) applies it itself; forked children inherit the redirected fds anyway.

Stdlib only (no Django import).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO


class StdioCapture:
    """Owns fds 1 and 2 while capture_output is on; restores them when it is turned off."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._saved: tuple[int, int] | None = None  # the original fds 1 and 2, dup'ed

    @staticmethod
    def target(cfg: Any) -> str | None:
        """The file to capture into, or None (off, or the error log is the console: there
        is nothing to redirect, as in gunicorn)."""
        errorlog = getattr(cfg, "errorlog", "-") or "-"
        if not getattr(cfg, "capture_output", False) or errorlog == "-":
            return None
        return str(errorlog)

    @staticmethod
    def open(path: str) -> int:
        """Open the capture file for appending (raises OSError): done before anything else
        changes, so a failure leaves the process as it was."""
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def apply(self, path: str | None, fd: int | None) -> None:
        """Point fds 1 and 2 at ``fd`` (opened by ``open``), or give them back when None."""
        _flush_std_streams()
        if fd is not None:
            if self._saved is None:
                self._saved = (os.dup(1), os.dup(2))
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            self.path = path
        elif self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for saved in self._saved:
                os.close(saved)
            self._saved = None
            self.path = None

    def reopen(self) -> None:
        """USR1: capture into a fresh open of the same path (after logrotate's rename)."""
        if self.path is None:
            return
        try:
            fd = self.open(self.path)
        except OSError as exc:  # keep writing to the old file rather than to nowhere
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"django-prefork: cannot reopen {self.path}: {exc}\n")
            return
        self.apply(self.path, fd)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


class StdioInheritance:
    """``-R``: the process's sys.stdout/sys.stderr are flushed at each line's end, so an
    application's print() reaches the inherited stdout while the server runs instead of in
    8 KB blocks (or at exit) when stdout is a pipe. (Replacing the stream objects would go
    further, but code such as a management command already holds them.)"""

    def __init__(self) -> None:
        self._before: dict[int, tuple[bool, bool]] = {}

    def apply(self, enabled: bool) -> None:
        for stream in (sys.stdout, sys.stderr):
            if not hasattr(stream, "reconfigure"):
                continue
            text_stream: TextIO = stream
            key = id(text_stream)
            if enabled and key not in self._before:
                self._before[key] = (bool(text_stream.line_buffering),
                                     bool(getattr(text_stream, "write_through", False)))
                with contextlib.suppress(OSError, ValueError):
                    text_stream.reconfigure(  # type: ignore[attr-defined]
                        line_buffering=True, write_through=True)
            elif not enabled and key in self._before:
                line_buffering, write_through = self._before.pop(key)
                with contextlib.suppress(OSError, ValueError):
                    text_stream.reconfigure(  # type: ignore[attr-defined]
                        line_buffering=line_buffering, write_through=write_through)
