"""What ``--reload`` watches, found the way Django's autoreloader (runserver) finds it.

Run in the process that imported the project (a generation's zygote): the master is lean and
does not know the project's modules. The list goes to the master (`server/devreload.py`),
which watches it.

- every module file in ``sys.modules`` (``django.utils.autoreload.iter_all_python_module_files``:
  the project, its settings, Django, the libraries: runserver watches the same set), and the
  files that failed to import in this process;
- what receivers of Django's ``autoreload_started`` signal ask for with ``watch_dir`` (Django's
  own receiver adds every template directory, ``get_template_directories()``, as ``**/*``);
- the WSGI module and the middleware modules, which only the workers import;
- the ``-c`` config file and ``--reload-extra-file`` entries (patterns are re-expanded on each
  scan by the master).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from typing import Any

from django_prefork.server.devreload import WatchList, is_glob


class _WatchCollector:
    """Stands in for Django's reloader as the sender of ``autoreload_started``: receivers
    call ``watch_dir(path, glob)`` on it (``watch_file`` too, for older receivers)."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.globs: set[str] = set()

    def watch_dir(self, path: Any, glob: str) -> None:
        self.globs.add(os.path.join(os.path.abspath(os.fspath(path)), glob))

    def watch_file(self, path: Any) -> None:
        self.files.add(os.path.abspath(os.fspath(path)))


def watch_list(cfg: Any, error: BaseException | None = None) -> WatchList:
    """The files of this process's project; with ``error`` (the import that failed), also the
    files it was raised in, so that saving the fix triggers the next attempt."""
    files: set[str] = set()
    globs: set[str] = set()
    if "django" in sys.modules:
        from django.apps import apps
        from django.utils import autoreload

        files.update(str(path) for path in autoreload.iter_all_python_module_files())
        if apps.ready:  # the template directories come from the settings and the apps
            import django.template.autoreload  # noqa: F401 - connects Django's receiver

            collector = _WatchCollector()
            # send_robust: a receiver that expects runserver's reloader must not stop the
            # generation (Django logs its error).
            autoreload.autoreload_started.send_robust(sender=collector)
            files |= collector.files
            globs |= collector.globs
            files |= _worker_module_files()
    if error is not None:
        files.update(_error_files(error))
    if cfg.config and os.path.isfile(cfg.config):
        files.add(os.path.abspath(cfg.config))
    for entry in cfg.reload_extra_files:
        (globs if is_glob(entry) else files).add(os.path.abspath(entry))
    return WatchList(frozenset(files), frozenset(globs))


def split(watch_list: WatchList, limit: int = 60000) -> list[bytes]:
    """The list as JSON messages of at most about ``limit`` bytes each (one control-socket
    message is read into a 64 KiB buffer; a project's ~1000 paths need more)."""
    messages: list[bytes] = []
    files: list[str] = []
    size = 0
    for path in sorted(watch_list.files):
        if files and size + len(path) + 4 > limit:
            messages.append(json.dumps({"files": files}).encode())
            files, size = [], 0
        files.append(path)
        size += len(path.encode()) + 4
    messages.append(json.dumps({"files": files, "globs": sorted(watch_list.globs)}).encode())
    return messages


def _worker_module_files() -> set[str]:
    """The WSGI module and the middleware modules: the workers import them after the fork,
    so they are not in this process's sys.modules. Found, not imported (no side effects)."""
    from django.conf import settings

    names = [str(path).rpartition(".")[0] for path in
             [getattr(settings, "WSGI_APPLICATION", None), *getattr(settings, "MIDDLEWARE", [])]
             if path]
    found: set[str] = set()
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except Exception:  # a parent package that fails: the worker importing it says why
            continue
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            found.add(os.path.abspath(spec.origin))
    return found


def _error_files(error: BaseException) -> set[str]:
    """The existing files named by the error and its causes' tracebacks."""
    found: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SyntaxError) and current.filename:
            found.add(current.filename)
        found.update(frame.filename for frame in traceback.extract_tb(current.__traceback__))
        current = current.__cause__ or current.__context__
    return {os.path.abspath(path) for path in found if os.path.isfile(path)}
