"""The master's end of a zygote (see `django_prefork.workers.zygote` for why there is one).

Nothing here blocks: the control socket is non-blocking, sits in the master loop's select,
and is read only when it has something to say.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

from django_prefork.conf import Config
from django_prefork.server.sockets import Listener
from django_prefork.server.spawn import spawn_interpreter
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.loadboard import LoadBoard
from django_prefork.workers.zygote import ENV_VAR

_PR_SET_CHILD_SUBREAPER = 36
_MAX_MESSAGE = 65536


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to us, so zygote forks are our children."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class ZygoteProcess:
    """A zygote (or, with probe=True, a one-shot settings-and-code check) being run by us."""

    def __init__(self, cfg: Config, board: LoadBoard, *, reread: bool, probe: bool,
                 cli: dict[str, Any], check_code: bool, verbose_errors: bool) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec = {
            "cfg": cfg.to_dict(),
            "reread": reread,
            "probe": probe,
            "cli": cli,
            "check_code": check_code,
            "verbose_errors": verbose_errors,
            # Whether to patch comes from the running config: the new settings are only
            # known once read, and patching must come first.
            "gevent": cfg.worker_class == "gevent",
            "control_fd": theirs.fileno(),
            "board_fd": board.fd,
            "master_pid": os.getpid(),
            "sys_path": sys.path,
        }
        self.pid = spawn_interpreter("django_prefork.workers.zygote", ENV_VAR, spec,
                                     [theirs.fileno(), board.fd])
        theirs.close()
        self._sock.setblocking(False)
        self.exited = False
        self.eof = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self) -> list[bytes]:
        """Every message waiting on the control socket; b"" once the zygote has gone."""
        messages: list[bytes] = []
        while True:
            try:
                message = self._sock.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                message = b""
            messages.append(message)
            if not message:
                self.eof = True  # nothing more will come: stop watching the socket
                return messages

    def send_listeners(self, listeners: list[Listener]) -> None:
        specs = json.dumps([listener.spec for listener in listeners]).encode()
        self._send_with_fds(b"L" + specs, [listener.fileno() for listener in listeners])

    def request_worker(self, age: int, heartbeat: Heartbeat) -> None:
        self._send_with_fds(b"W" + str(age).encode(), [heartbeat.fd])

    def _send_with_fds(self, message: bytes, fds: list[int]) -> None:
        # A few bytes on a socket nobody else writes to: the buffer never fills, so this
        # does not block; OSError if the zygote has gone (its exit is reported by waitpid).
        socket.send_fds(self._sock, [message], fds)

    def stop(self) -> None:
        """Ask it to exit. The control socket stays open until it has (a fork it made just
        before may still report its worker, which the master must know of to stop it)."""
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def close_control(self) -> None:
        """Drop our end of the control socket (also in a forked worker, which has a copy)."""
        with contextlib.suppress(OSError):
            self._sock.close()
