"""The master's end of a zygote (see `django_prefork.workers.zygote` for why there is one)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from django_prefork.server.sockets import Listener
from django_prefork.server.spawn import spawn_interpreter
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.loadboard import LoadBoard
from django_prefork.workers.zygote import ENV_VAR

_PR_SET_CHILD_SUBREAPER = 36
#: Longest wait for the zygote to import Django and the settings.
BOOT_TIMEOUT = 120.0
#: Longest wait for one fork to be reported.
FORK_TIMEOUT = 10.0


class ZygoteError(Exception):
    """The zygote failed to start or to fork; the master falls back or stops."""


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to us, so zygote forks are our children."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Zygote:
    """A fresh interpreter holding one generation's imports; forks its workers."""

    def __init__(self, cfg: Any, listeners: list[Listener], generation: int,
                 board: LoadBoard) -> None:
        self.generation = generation
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [listener.fileno() for listener in listeners]
        spec = {
            "cfg": cfg.to_dict(),
            "listener_fds": fds,
            "listener_specs": [listener.spec for listener in listeners],
            "control_fd": theirs.fileno(),
            "board_fd": board.fd,
            "master_pid": os.getpid(),
            "sys_path": sys.path,
        }
        pid = spawn_interpreter("django_prefork.workers.zygote", ENV_VAR, spec,
                                [*fds, theirs.fileno(), board.fd])
        theirs.close()
        self.pid = pid
        self.ready = False
        self._buffer = b""

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Block until the zygote has set Django up; ZygoteError if it died trying."""
        if self._read(1, timeout) != b"R":
            raise ZygoteError("the zygote failed to start")
        self.ready = True

    def fork_worker(self, age: int, heartbeat: Heartbeat) -> int:
        try:
            socket.send_fds(self._sock, [str(age).encode()], [heartbeat.fd])
            line = self._read_line(FORK_TIMEOUT)
        except OSError as exc:
            raise ZygoteError(f"the zygote did not fork: {exc}") from None
        return int(line)

    def stop(self) -> None:
        self.close_control()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def close_control(self) -> None:
        """Drop our end of the control socket (also in a forked worker, which has a copy)."""
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- reading with a deadline ------------------------------------------------------------
    def _read(self, size: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buffer) < size:
            self._fill(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            self._fill(deadline)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ZygoteError("the zygote did not answer in time")
        ready, _, _ = select.select([self._sock], [], [], remaining)
        if ready:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ZygoteError("the zygote exited")
            self._buffer += chunk
