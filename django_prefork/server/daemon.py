"""``--daemon``: detach the master from the terminal that started it.

The classic recipe (the Unix programming FAQ, section 1.7, which gunicorn follows): fork and
let the command's process exit, so the shell gets its prompt back; ``setsid`` in the child,
so it leads a session of its own with no controlling terminal (a hang-up of the terminal
no longer reaches it); fork again, so the daemon is not a session leader and can never
acquire a terminal again. stdin, and stdout/stderr unless they already go to a log file,
then point at /dev/null. The working directory stays the one ``chdir`` chose (gunicorn does
not change it either), so relative paths keep their meaning.

It runs after the sockets are bound and before the lean master's execve, so the daemon is
the master: the pidfile, written by the arbiter, holds its pid.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["daemon_problem", "daemonize", "should_daemonize"]


def daemon_problem(cfg: Any, environ: Mapping[str, str]) -> str | None:
    """Why --daemon cannot work here (one line), or None.

    Under systemd (NOTIFY_SOCKET is set for Type=notify) the service manager supervises
    the process it started: a daemon would leave it, systemd would take the command's exit
    for the service's, and READY=1 would come from a process it does not watch. gunicorn's
    documentation also says not to daemonize under systemd; here it is refused.
    """
    if not getattr(cfg, "daemon", False):
        return None
    if environ.get("NOTIFY_SOCKET"):
        return ("--daemon (DAEMON) cannot be used under systemd (NOTIFY_SOCKET is set): "
                "systemd supervises the process it starts. Fix: remove --daemon and use "
                "Type=notify (docs/deployment.md).")
    return None


def should_daemonize(cfg: Any) -> bool:
    """--daemon, except in the new master of a USR2 upgrade: it is the old daemon's child,
    already detached, and the old master must watch it (server/upgrade.py)."""
    from django_prefork.server.upgrade import old_master_pid

    return bool(getattr(cfg, "daemon", False)) and old_master_pid() is None


def daemonize(cfg: Any) -> None:
    """Double fork and setsid; returns only in the daemon. The command's own process exits
    with status 0 once the intermediate child has exited."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    _detach_stdio(cfg)


def _detach_stdio(cfg: Any) -> None:
    """stdin to /dev/null; stdout and stderr too, unless capture_output already points them
    at the error log file, or enable_stdio_inheritance keeps ones that are not a terminal
    (gunicorn's rule: shell redirections survive, the terminal does not)."""
    from django_prefork.logcapture import StdioCapture

    captured = StdioCapture.target(cfg) is not None
    inherit = bool(getattr(cfg, "enable_stdio_inheritance", False))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for fd in (1, 2):
        if captured or (inherit and not os.isatty(fd)):
            continue
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
