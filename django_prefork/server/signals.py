"""The master's stray signals: ones an operator may send that have no job in the master.

Their default action would end the master silently, taking every worker with it. The master
catches them instead, logs that it ignored one, and keeps serving. The reasons per signal are
in docs/deployment.md ("Signals").

Left at their default on purpose: SIGKILL and SIGSTOP (cannot be caught), and the signals that
mean the process itself is broken or being debugged (SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
SIGSEGV, SIGSYS): the kernel raises them for a faulting instruction or syscall, where
returning from a handler would run the same fault again, and abort(3) and systemd's watchdog
rely on SIGABRT ending the process.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("django_prefork.error")

# A stray signal is logged at most this often (per signal): a real SIGPIPE or SIGXFSZ comes
# back each time the master writes to a broken log pipe or a full log file, and logging each
# would write again, so an unbounded log line would feed itself.
LOG_INTERVAL = 10.0

_OPTIONAL = ("SIGSTKFLT", "SIGIO", "SIGPWR", "SIGLOST", "SIGEMT", "SIGINFO")


def _stray_signals() -> tuple[int, ...]:
    found: list[int] = [
        signal.SIGPIPE,  # writing to a closed pipe or socket: the write fails with EPIPE instead
        signal.SIGALRM,  # the master sets no alarm
        signal.SIGVTALRM,
        signal.SIGPROF,  # a profiler's timer the master did not set
        signal.SIGXCPU,  # CPU rlimit reached: SIGKILL follows at the hard limit anyway
        signal.SIGXFSZ,  # file size rlimit: the write fails with EFBIG instead
    ]
    found += [getattr(signal, name) for name in _OPTIONAL if hasattr(signal, name)]
    if hasattr(signal, "SIGRTMIN"):  # real-time signals default to "terminate"
        found += range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    return tuple(sorted(set(found)))


STRAY_SIGNALS: tuple[int, ...] = _stray_signals()


def signal_name(signum: int) -> str:
    """SIGALRM -> "alrm", a real-time signal -> "rtmin+3" (as the master's log names them)."""
    try:
        return signal.Signals(signum).name[3:].lower()
    except ValueError:
        if hasattr(signal, "SIGRTMIN") and signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return f"rtmin+{signum - signal.SIGRTMIN}"
        return str(signum)


class StraySignals:
    """Catches the stray signals in the master and logs them, rate-limited."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._last_logged: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}

    def install(self, handler: Callable[[int, Any], None]) -> None:
        """Route the stray signals to handler (the master's queue), remembering the old state."""
        for signum in STRAY_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, handler)
            except (OSError, ValueError):  # reserved by the C library or the platform
                continue

    def restore(self) -> None:
        """In a forked child: back to what the process had before (SIGPIPE stays ignored)."""
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (OSError, ValueError, TypeError):
                continue

    def handles(self, signum: int) -> bool:
        return signum in self._previous

    def log_ignored(self, signum: int) -> None:
        now = time.monotonic()
        last = self._last_logged.get(signum)
        if last is not None and now - last < LOG_INTERVAL:
            self._suppressed[signum] = self._suppressed.get(signum, 0) + 1
            return
        self._last_logged[signum] = now
        more = self._suppressed.pop(signum, 0)
        log.warning("Ignoring signal %s: it has no meaning for the master, which keeps "
                    "serving%s", signal_name(signum),
                    f" ({more} more ignored since the last line)" if more else "")


def in_terminal_foreground() -> bool:
    """True when the master runs in the foreground of a terminal.

    There a window resize sends SIGWINCH to the whole foreground process group, so WINCH
    cannot mean "stop the workers" (gunicorn acts on WINCH only when daemonized, for the same
    reason). Under systemd, Docker, nohup/setsid or a supervisor there is no controlling
    terminal and WINCH comes from an operator.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)
