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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_prefork.workers.base import Worker

ENV_VAR = "DJANGO_PREFORK_WORKER"


def load_urlconf() -> None:
    """Import the project's URLconf and its views now, not at the first request.

    Django imports them lazily, so without this a worker (or a zygote) whose new code has a
    SyntaxError in a view would report ready and then answer every request with a 500.
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf


class WarmUpFailed(Exception):
    """The warm-up request failed: the worker must not count as ready."""


def warm_up(app: Any, cfg: Any) -> None:
    """GET cfg.reload_warmup_path through the app, in this process, before reporting ready.

    A view that imports fine may still fail when it runs (a missing template, a bad query):
    with a warm-up path set, a new worker whose answer there is a 5xx (or an exception) fails
    its boot, so a reload rolls back instead of retiring workers that served.
    """
    path = getattr(cfg, "reload_warmup_path", None)
    if not path:
        return
    import io

    from django.conf import settings

    # A host the project accepts, so the answer is the view's and not a DisallowedHost 400.
    hosts = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h not in ("*", ".")]
    host = hosts[0] if hosts else "localhost"
    target, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": target,
        "QUERY_STRING": query, "SERVER_NAME": host, "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "django-prefork warm-up", "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    result = app(environ, start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status = statuses[-1] if statuses else "no response"
    if not status[:1].isdigit() or status[0] == "5":
        raise WarmUpFailed(f"the warm-up request GET {path} answered {status} "
                           "(RELOAD_WARMUP_PATH)")


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
    from django_prefork.workers.base import WORKER_BOOT_ERROR
    from django_prefork.workers.heartbeat import Heartbeat
    from django_prefork.workers.loadboard import LoadBoard

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
