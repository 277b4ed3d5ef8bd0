"""The lean master: the same process, re-executed without Django, before any worker exists.

Why: `runprefork` is a management command, so by the time it has validated the settings,
run the checks and bound the sockets, its interpreter holds Django, the settings and (through
the checks) the URLconf: about 35 MB that, once a HUP has moved the workers to a new
generation, nobody shares any more. Like gunicorn's master, this one imports only the server
(about 13 MB); every generation, the first included, is read and imported by a zygote whose
workers share its pages. Measured figures: docs/architecture.md, "Memory model".

`execve` keeps the PID (pidfile, systemd's MAINPID and the operator's `kill` stay right), the
listening sockets (made inheritable) and stdout/stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from django_prefork.conf import Config
from django_prefork.server.arbiter import MASTER_SIGNALS, Arbiter
from django_prefork.server.sockets import Listener
from django_prefork.server.upgrade import start_directory

ENV_VAR = "DJANGO_PREFORK_MASTER"


def lean_master_possible(cfg: Config, logging_settings: Any) -> bool:
    """Whether the master may drop Django: not with --preload (the app lives in the master),
    nor when the project's LOGGING routes our loggers itself (only Django could apply it),
    nor without zygotes (not Linux: each worker would be an interpreter of its own, where a
    fork of this process shares its pages)."""
    if cfg.preload_app or not sys.platform.startswith("linux"):
        return False
    loggers = (logging_settings or {}).get("loggers", {}) if isinstance(
        logging_settings, dict) else {}
    return not any(name in loggers for name in ("django_prefork", "django_prefork.error"))


def hold_signals() -> None:
    """Keep the master's signals pending until its handlers are in place (Arbiter.start).

    From the banner on an operator may signal the master; until then the default actions
    would end it (HUP, USR1, TTIN, and stray ones such as ALRM or PIPE). The mask also
    survives the lean master's execve.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)


def exec_lean_master(cfg: Config, listeners: list[Listener], cli: dict[str, Any],
                     metrics_listener: Listener | None = None) -> NoReturn:
    """Replace this process with `python -m django_prefork.server.master`; never returns."""
    inherited = [*listeners, *([metrics_listener] if metrics_listener else [])]
    spec = {
        "cfg": cfg.to_dict(),
        "cli": cli,
        "listeners": [
            {"fd": listener.fileno(), "spec": listener.spec, "owns_path": listener.owns_path}
            for listener in listeners
        ],
        "metrics": ({"fd": metrics_listener.fileno(), "spec": metrics_listener.spec}
                    if metrics_listener else None),
        "sys_path": sys.path,
        # The command as the operator ran it, for anything that re-executes it (USR2).
        "argv": sys.argv,
        "orig_argv": list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]),
        "start_directory": start_directory(),
    }
    for listener in inherited:
        os.set_inheritable(listener.fileno(), True)
    hold_signals()
    env = dict(os.environ)
    env[ENV_VAR] = json.dumps(spec)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "django_prefork.server.master"], env)


def main() -> None:
    spec = json.loads(os.environ.pop(ENV_VAR))
    sys.path[:] = spec["sys_path"]
    sys.argv[:] = spec["argv"]

    from django_prefork.logging import configure_logging
    from django_prefork.server.pidfile import PidfileError
    from django_prefork.server.upgrade import remember_start_directory, set_start_command

    set_start_command(spec["orig_argv"])
    remember_start_directory(spec["start_directory"])
    cfg = Config.from_dict(spec["cfg"])
    listeners = []
    for item in spec["listeners"]:
        os.set_inheritable(item["fd"], False)
        listeners.append(Listener(socket.socket(fileno=item["fd"]), item["spec"],
                                  owns_path=item["owns_path"]))
    metrics_listener = None
    if spec.get("metrics"):
        item = spec["metrics"]
        os.set_inheritable(item["fd"], False)
        metrics_listener = Listener(socket.socket(fileno=item["fd"]), item["spec"])
    configure_logging(cfg)
    try:
        status = Arbiter(cfg, listeners, cli_overrides=spec["cli"], share_master=False,
                         metrics_listener=metrics_listener).run()
    except PidfileError as exc:  # another master took the pidfile since the command's checks
        sys.stderr.write(f"CommandError: --pid (PIDFILE): {exc}\n")
        sys.exit(1)
    sys.exit(status)


if __name__ == "__main__":
    main()
