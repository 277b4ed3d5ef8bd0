"""Entry point of a worker started as a fresh interpreter (`python -m ...workers.boot`).

The master passes everything as one JSON document in DJANGO_PREFORK_WORKER: the resolved
config, the inherited listening and heartbeat descriptors, and its sys.path. A fresh
interpreter imports the project's current code and settings (so HUP really reloads), and lets
the gevent worker patch the standard library before Django is imported.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_prefork.workers.base import Worker

ENV_VAR = "DJANGO_PREFORK_WORKER"


def main() -> None:
    spec = json.loads(os.environ.pop(ENV_VAR))
    sys.path[:] = spec["sys_path"]
    # Before anything of the project is imported: as the workers' user (USER, GROUP).
    from types import SimpleNamespace

    from django_prefork.server.privileges import PrivilegeError, drop_privileges

    try:
        drop_privileges(SimpleNamespace(**spec["cfg"]))
    except PrivilegeError as exc:
        sys.stderr.write(f"Worker failed to boot: {exc}\n")
        os._exit(3)  # WORKER_BOOT_ERROR: workers.base is imported only after gevent patches
    worker_class_name = spec["cfg"]["worker_class"]
    if worker_class_name == "gevent":
        from gevent import monkey

        monkey.patch_all()

    from django_prefork.conf import Config
    from django_prefork.server.sockets import listeners_from_fds
    from django_prefork.workers import worker_class_for
    from django_prefork.workers.heartbeat import Heartbeat
    from django_prefork.workers.loadboard import LoadBoard
    from django_prefork.workers.process import WORKER_BOOT_ERROR

    cfg = Config.from_dict(spec["cfg"])
    worker: Worker | None = None
    try:
        import django

        django.setup()
        from django_prefork.logging import configure_logging

        configure_logging(cfg)
        worker_class = worker_class_for(cfg.worker_class, cfg)
        worker = worker_class(
            age=spec["age"],
            ppid=spec["ppid"],
            listeners=listeners_from_fds(spec["listener_fds"], spec["listener_specs"]),
            cfg=cfg,
            heartbeat=Heartbeat(spec["heartbeat_fd"]),
            board=LoadBoard(spec["board_fd"]),
        )
        worker.install_signal_handlers()  # before the app loads (issue 15.6)
        worker.post_fork()  # gunicorn's post_fork hook; raising fails the boot
        from django_prefork.workers.base import load_wsgi_app
        from django_prefork.workers.project import load_urlconf, warm_up

        worker.app = load_wsgi_app()
        load_urlconf()
        warm_up(worker.app, cfg)
        # Loading the app may run django.setup() again (get_wsgi_application does), which
        # re-applies LOGGING and can disable our loggers: wire them once more, last.
        configure_logging(cfg)
    except Exception:
        # Reported once by this worker; the master stops instead of respawning forever.
        sys.stderr.write("Worker failed to boot:\n" + traceback.format_exc())
        sys.stderr.flush()
        if worker is not None:
            worker.exiting()  # gunicorn's worker_exit runs after a failed boot too
        os._exit(WORKER_BOOT_ERROR)
    worker.start()
    sys.exit(0)


if __name__ == "__main__":
    main()
