"""The worker classes, by the name `worker_class` gives them.

One table maps a name to the module and class that implement it. A class is imported only
when it is chosen, so a sync worker never imports gevent, and `workers/base.py` (which every
class imports) never imports a class: no import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_prefork.workers.base import Worker

#: `worker_class` name -> (module, class).
WORKER_CLASSES: dict[str, tuple[str, str]] = {
    "sync": ("django_prefork.workers.sync", "SyncWorker"),
    "gthread": ("django_prefork.workers.gthread", "ThreadWorker"),
    "gevent": ("django_prefork.workers.ggevent", "GeventWorker"),
}


def resolve_worker_class(name: str, cfg: Any = None) -> str:
    """The class that really runs: `sync` with `threads` > 1 is gthread (as gunicorn)."""
    if name == "sync" and cfg is not None and getattr(cfg, "threads", 1) > 1:
        return "gthread"
    return name


def worker_class_for(name: str, cfg: Any = None) -> type[Worker]:
    """Import only the chosen class. Pass the config so that `sync` with `threads` > 1 gives
    the gthread worker."""
    name = resolve_worker_class(name, cfg)
    try:
        module_name, class_name = WORKER_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown worker class {name!r}") from None
    worker_class: type[Worker] = getattr(importlib.import_module(module_name), class_name)
    return worker_class
