"""Loading the project in a process that will serve it (a zygote or a worker): the checks
that a new generation's code runs, and the imports that let the workers share its pages.

Apart from `workers/boot.py` (a fresh interpreter's entry point) so that `workers/base.py`
and the zygote use these without importing each other.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

#: The header of a timestamp-based .pyc (PEP 552): magic, flags, source mtime, source size.
_PYC_HEADER = 16


def forget_stale_bytecode(module: str) -> bool:
    """Delete the cached bytecode of `module` if its source changed after it was written,
    before the module is imported again; True if it did.

    Python trusts a .pyc that records the source's mtime in whole seconds and its size: a
    settings file rewritten within the second it was last imported, to the same length
    (`WORKERS = 1` -> `WORKERS = 3`), would be read as it was, and a HUP right after the
    edit would reload the old settings. The .pyc's own mtime tells: it was written when the
    source was imported, so a source modified later is newer than it.
    """
    try:
        spec = importlib.util.find_spec(module)  # (imports its parent packages)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.cached or not spec.has_location:
        return False
    try:
        source = os.stat(spec.origin)
        cached = os.stat(spec.cached)
        with open(spec.cached, "rb") as f:
            header = f.read(_PYC_HEADER)
    except OSError:
        return False  # no .pyc (or no source): nothing stale to read
    if len(header) < _PYC_HEADER or int.from_bytes(header[4:8], "little") != 0:
        return False  # hash-based .pyc: Python checks those against the source itself
    recorded_mtime = int.from_bytes(header[8:12], "little")
    recorded_size = int.from_bytes(header[12:16], "little")
    trusted = (recorded_mtime == int(source.st_mtime) & 0xFFFFFFFF
               and recorded_size == source.st_size & 0xFFFFFFFF)
    if not trusted or cached.st_mtime_ns >= source.st_mtime_ns:
        return False  # Python recompiles it anyway, or it is up to date
    try:
        os.unlink(spec.cached)
    except OSError:
        return False
    return True


def load_urlconf() -> None:
    """Import the project's URLconf and its views now, not at the first request.

    Django imports them lazily, so without this a worker (or a zygote) whose new code has a
    SyntaxError in a view would report ready and then answer every request with a 500.
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf


def share_with_workers(cfg: Any) -> None:
    """In a zygote: import what every worker imports on its way to its first answer, so that
    the workers share those pages instead of each holding its own copy.

    The worker class's module, Django's WSGI handler and the modules of MIDDLEWARE (imported,
    not instantiated: the app object is still made in each worker), and the URL resolver's
    lookup tables, which Django otherwise builds at each worker's first request. Sync Django
    hello, 2 workers: whole-tree PSS 80.8 -> 77.2 MB (docs/architecture.md, "Memory model").
    """
    import django.core.handlers.wsgi  # noqa: F401 - imported for its pages
    from django.conf import settings
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    from django_prefork.workers import worker_class_for

    worker_class_for(cfg.worker_class, cfg)
    for path in getattr(settings, "MIDDLEWARE", None) or ():
        try:
            import_string(path)
        except Exception:  # the worker reports it, where loading the app fails
            return
    get_resolver().reverse_dict  # noqa: B018 - the property builds the lookup tables


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
