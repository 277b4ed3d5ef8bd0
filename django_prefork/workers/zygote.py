"""The zygote: a fresh interpreter that reads a generation's settings and code once, then forks
its workers on request.

Why: after a HUP only a fresh interpreter sees the new code and settings, and gevent must patch
the standard library before Django is imported, which a fork of the master cannot do. A worker
started as a fresh interpreter of its own would share no memory with anything; the zygote
imports Django and the project once, and its forks share those pages copy-on-write and boot in
milliseconds. Reading the settings here, in the generation's own interpreter, means they are
read once, by the code that will run with them.

The zygote counts as ready only once it has loaded the URLconf: Django imports it lazily, so a
SyntaxError in a view would otherwise show only as a 500 on the first request, after the old
workers had retired.

Protocol on the control socket (an AF_UNIX SOCK_SEQPACKET pair: one message per send):
- zygote → master: b"R" + the resolved config as JSON once ready, or b"F" + one line saying
  why it cannot be (then it exits).
- master → zygote: b"L" + the listeners' specs as JSON, their fds attached (SCM_RIGHTS): the
  sockets the workers serve. Sent once, after "R" (the settings may change the bind list).
- zygote → master: b"S" once it reads fork requests (after R, and after the watch list
  with --reload, which may take seconds to make): the master counts how long a fork
  request goes unanswered from then on (`server/starter.FORK_REPORT_TIMEOUT`).
- master → zygote: b"W" + the worker's age, its heartbeat fd attached; zygote → master:
  b"P" + "age pid" once forked.
- zygote → master, with --reload: b"D" + a JSON watch list (`server/devreload.WatchList`),
  in one or more messages, after "R" or before "F" (`workers/reloadfiles.py`).
- In "probe" mode (spec["probe"]) the zygote reports R or F and exits: the generation then
  forks or execs its workers itself.
Each worker is double-forked so that it is re-parented to the master (a child subreaper):
the master reaps it, and the worker's parent-death check watches the master.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

ENV_VAR = "DJANGO_PREFORK_ZYGOTE"
#: Exit status of a zygote that could not get ready (it said why on the control socket).
ZYGOTE_BOOT_ERROR = 3
_REPARENT_WAIT = 5.0
_MAX_MESSAGE = 65536
_MAX_FDS = 256


class BootFailure(Exception):
    """The generation cannot start; str() is the one line the master logs."""


def main() -> None:
    spec = json.loads(os.environ.pop(ENV_VAR))
    sys.path[:] = spec["sys_path"]
    control = socket.socket(fileno=spec["control_fd"])
    # The zygote imports the project: as the workers' user, never as root (USER, GROUP).
    from django_prefork.server.privileges import PrivilegeError, drop_privileges

    try:
        drop_privileges(SimpleNamespace(**spec["cfg"]))
    except PrivilegeError as exc:
        _send(control, b"F" + str(exc).encode("utf-8", "replace"))
        os._exit(ZYGOTE_BOOT_ERROR)
    if spec["gevent"]:
        from gevent import monkey

        monkey.patch_all()
    try:
        cfg = boot(spec)
    except BootFailure as exc:
        if spec["verbose_errors"] and exc.__cause__ is not None:
            sys.stderr.write("Worker failed to boot:\n" + "".join(
                traceback.format_exception(exc.__cause__)))
            sys.stderr.flush()
        if spec["cfg"].get("reload"):
            _send_watch_list(control, spec["cfg"], exc.__cause__ or exc)
        _send(control, b"F" + str(exc).encode("utf-8", "replace"))
        os._exit(ZYGOTE_BOOT_ERROR)

    from django_prefork.workers.process import release_free_heap, set_process_title

    set_process_title("zygote", cfg)
    release_free_heap()  # what the imports freed, before any worker shares it
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the master, which stops us
    _send(control, b"R" + json.dumps(cfg.to_dict()).encode())
    if cfg.reload:  # after R: listing ~1000 files takes a quarter of a second
        _send_watch_list(control, cfg.to_dict(), None)
    if spec["probe"]:
        os._exit(0)
    _send(control, b"S")  # from here on each fork request is answered within milliseconds
    serve_fork_requests(control, cfg, spec)
    os._exit(0)


def boot(spec: dict[str, Any]) -> Any:
    """Read the settings (again, after a HUP), set Django up and load the URLconf."""
    from django_prefork.conf import Config, ConfigError, load_config

    try:
        if spec["reread"]:
            from django.conf import settings

            from django_prefork.workers.project import forget_stale_bytecode

            forget_stale_bytecode(os.environ.get("DJANGO_SETTINGS_MODULE", ""))

            cfg = load_config(prefork=getattr(settings, "PREFORK", None), environ=os.environ,
                              cli=spec["cli"])
        else:
            cfg = Config.from_dict(spec["cfg"])
    except ConfigError as exc:
        raise BootFailure(str(exc)) from None
    except Exception as exc:  # an error in settings.py itself
        raise BootFailure(f"cannot load the settings: {describe_error(exc)}") from exc
    from django_prefork.conf.process import apply_process_settings

    # raw_env, chdir, pythonpath as read now (a HUP's new values: gunicorn applies them again
    # on reload), before Django and the project are imported; the workers inherit them.
    apply_process_settings(cfg)
    from django_prefork.http.tls import tls_problem

    problem = tls_problem(cfg)  # new certificate files are read by the new generation
    if problem:
        raise BootFailure(problem)
    identity = ("user", "group", "initgroups")
    if any(getattr(cfg, name) != spec["cfg"].get(name) for name in identity):
        raise BootFailure(
            "USER, GROUP or INITGROUPS changed: switching the workers' user needs a restart "
            "(the new settings were read as the current workers' user, not as root)")
    if (cfg.worker_class == "gevent") != spec["gevent"]:
        raise BootFailure(
            f"WORKER_CLASS changed to {cfg.worker_class!r}: switching to or from gevent needs "
            "a restart (gevent patches the standard library before Django is imported)")
    try:
        import django

        django.setup()
        from django.db import connections

        from django_prefork.logging import LoggingSetupError, configure_logging

        try:
            configure_logging(cfg)
        except LoggingSetupError as exc:
            raise BootFailure(str(exc)) from None
        if spec["check_code"]:
            from django_prefork.workers.project import load_urlconf

            load_urlconf()
        if spec["check_code"]:
            from django_prefork.workers.project import share_with_workers

            share_with_workers(cfg)
        connections.close_all()  # opened by settings or URLconf? workers must not share it
        # The server hooks, read here once (the -c file run, PREFORK paths imported, with
        # Django set up) rather than by every forked worker on its first hook call.
        _ = cfg.hooks
    except BootFailure:
        raise
    except Exception as exc:
        raise BootFailure(f"cannot load the project: {describe_error(exc)}") from exc
    return cfg


def describe_error(exc: BaseException) -> str:
    """One line: the exception and, unless it says so itself, where it was raised."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text  # its str() names the file and the line
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return " ".join(text.split())


def serve_fork_requests(control: socket.socket, cfg: Any, spec: dict[str, Any]) -> None:
    """Wait for the listeners, then fork a worker for each request until the master goes."""
    from django_prefork.server.sockets import Listener, listeners_from_fds
    from django_prefork.workers.loadboard import LoadBoard

    board = LoadBoard(spec["board_fd"])
    listeners: list[Listener] = []
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, _MAX_FDS)
        except OSError:
            return
        if not message:
            return  # the master is gone
        kind, body = message[:1], message[1:]
        if kind == b"L":
            for old in listeners:
                old.close(unlink=False)
            listeners = listeners_from_fds(fds, json.loads(body))
        elif kind == b"W" and fds:
            _fork_worker(control, cfg, listeners, board, int(body), fds[0], spec["master_pid"])
        else:
            for fd in fds:
                os.close(fd)


def _send_watch_list(control: socket.socket, cfg_dict: dict[str, Any],
                     error: BaseException | None) -> None:
    """--reload: b"D" + the files the master should watch (workers/reloadfiles.py); after a
    failure, with the files the error was raised in."""
    from django_prefork.conf import Config
    from django_prefork.workers.reloadfiles import split, watch_list

    try:
        messages = split(watch_list(Config.from_dict(cfg_dict), error))
    except Exception as exc:  # the reload then watches less; it never stops the generation
        sys.stderr.write(f"--reload: cannot list the files to watch: {describe_error(exc)}\n")
        return
    for message in messages:
        _send(control, b"D" + message)


def _send(control: socket.socket, message: bytes) -> None:
    try:
        control.send(message)
    except OSError:
        os._exit(ZYGOTE_BOOT_ERROR)  # the master is gone


def kernel_fork_and_waitpid() -> tuple[Callable[[], int], Callable[[int, int], Any]]:
    """os.fork and os.waitpid as the kernel gives them, even where gevent patched os.

    gevent's pair learns that a child exited from a watcher it starts just after the fork;
    a child that exits before (its parent descheduled for a moment, as on a loaded machine)
    is never seen, and its waitpid waits forever. A gevent zygote then stopped forking
    workers in the middle of a reload. The zygote never runs gevent's loop, so it needs
    none of that: the worker re-initialises gevent itself (_become_worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return os.fork, os.waitpid
    return monkey.get_original("os", "fork"), monkey.get_original("os", "waitpid")


def _fork_worker(control: socket.socket, cfg: Any, listeners: list[Any], board: Any,
                 age: int, heartbeat_fd: int, master_pid: int) -> None:
    from django_prefork.workers.process import freeze_before_fork

    fork, waitpid = kernel_fork_and_waitpid()
    freeze_before_fork()
    middle = fork()
    if middle:
        os.close(heartbeat_fd)
        with contextlib.suppress(ChildProcessError):
            waitpid(middle, 0)
        return
    # The middle process: fork the worker, report its pid, and exit so that the worker is
    # re-parented to the master.
    try:
        # The master may signal the worker (USR1, TERM) as soon as it learns its pid: born
        # with those signals blocked, the worker acts on them once its handlers are in place
        # (run_worker_in_child unblocks them), instead of dying by their default action.
        from django_prefork.workers.base import WORKER_SIGNALS

        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        worker = fork()
        if worker:
            control.send(f"P{age} {worker}".encode())
            os._exit(0)
        _become_worker(control, cfg, listeners, board, age, heartbeat_fd, master_pid)
    finally:
        os._exit(1)


def _become_worker(control: socket.socket, cfg: Any, listeners: list[Any], board: Any,
                   age: int, heartbeat_fd: int, master_pid: int) -> None:
    from django_prefork.workers.base import run_worker_in_child
    from django_prefork.workers.heartbeat import Heartbeat

    if "gevent.monkey" in sys.modules:
        import gevent

        gevent.reinit()  # forked with the kernel's fork (kernel_fork_and_waitpid)
    control.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Wait to be adopted by the master, so the worker's parent-death check watches it.
    deadline = time.monotonic() + _REPARENT_WAIT
    while os.getppid() != master_pid and time.monotonic() < deadline:
        time.sleep(0.001)
    os._exit(run_worker_in_child(cfg=cfg, listeners=listeners, heartbeat=Heartbeat(heartbeat_fd),
                                 age=age, ppid=master_pid, board=board))


if __name__ == "__main__":
    main()
