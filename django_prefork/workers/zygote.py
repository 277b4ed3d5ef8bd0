"""The zygote: a fresh interpreter that imports Django once and forks workers on request.

Why: a worker started as a fresh interpreter shares no memory with anything, so after a HUP
(new code must come from a fresh interpreter) and for gevent (which must patch the standard
library before Django is imported, so it cannot be a fork of the master) each worker would
carry its own copy of Python, Django and the project's modules. The zygote imports them once;
its forks share those pages copy-on-write and boot in milliseconds.

Protocol on the control socket (a socketpair with the master):
- zygote → master: b"R" once Django is set up (or EOF if it failed: exit WORKER_BOOT_ERROR).
- master → zygote: the worker's age as ASCII digits, with the heartbeat fd attached
  (SCM_RIGHTS); zygote → master: the new worker's pid and b"\n".
Each worker is double-forked so that it is re-parented to the master (a child subreaper):
the master reaps it, and the worker's parent-death check watches the master.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback

ENV_VAR = "DJANGO_PREFORK_ZYGOTE"
_REPARENT_WAIT = 5.0


def main() -> None:
    spec = json.loads(os.environ.pop(ENV_VAR))
    sys.path[:] = spec["sys_path"]
    if spec["cfg"]["worker_class"] == "gevent":
        from gevent import monkey

        monkey.patch_all()

    from django_prefork.conf import Config
    from django_prefork.server.sockets import listeners_from_fds
    from django_prefork.workers.base import WORKER_BOOT_ERROR, set_process_title
    from django_prefork.workers.loadboard import LoadBoard

    cfg = Config.from_dict(spec["cfg"])
    master_pid = spec["master_pid"]
    control = socket.socket(fileno=spec["control_fd"])
    try:
        import django

        django.setup()
        from django.db import connections

        from django_prefork.logging import configure_logging

        configure_logging(cfg)
        connections.close_all()  # settings may have opened one; workers must not share it
        listeners = listeners_from_fds(spec["listener_fds"], spec["listener_specs"])
        board = LoadBoard(spec["board_fd"])
    except Exception:
        sys.stderr.write("Worker failed to boot:\n" + traceback.format_exc())
        sys.stderr.flush()
        os._exit(WORKER_BOOT_ERROR)

    set_process_title("zygote", cfg)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the master, which stops us
    control.sendall(b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, 1)
        except OSError:
            break
        if not message:
            break  # the master is gone
        _fork_worker(control, cfg, listeners, board, int(message), fds[0], master_pid)
    os._exit(0)


def _fork_worker(control: socket.socket, cfg: object, listeners: list, board: object,
                 age: int, heartbeat_fd: int, master_pid: int) -> None:
    from django_prefork.workers.base import freeze_before_fork

    freeze_before_fork()
    middle = os.fork()
    if middle:
        os.close(heartbeat_fd)
        os.waitpid(middle, 0)
        return
    # The middle process: fork the worker, report its pid, and exit so that the worker is
    # re-parented to the master.
    try:
        worker = os.fork()
        if worker:
            control.sendall(f"{worker}\n".encode())
            os._exit(0)
        _become_worker(control, cfg, listeners, board, age, heartbeat_fd, master_pid)
    finally:
        os._exit(1)


def _become_worker(control: socket.socket, cfg: object, listeners: list, board: object,
                   age: int, heartbeat_fd: int, master_pid: int) -> None:
    from django_prefork.workers.base import run_worker_in_child
    from django_prefork.workers.heartbeat import Heartbeat

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
