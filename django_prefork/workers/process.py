"""What the master, the zygote and the workers each need of a server process, without the
HTTP core: the lean master imports this and not `workers.base` (about 2 MB of modules it
would never run, docs/architecture.md, "Memory model")."""

from __future__ import annotations

import gc
from typing import Any

# Exit codes the master reads (as gunicorn's): the app could not be loaded, so respawning the
# worker would only fail again.
WORKER_BOOT_ERROR = 3


def set_process_title(role: str, cfg: Any) -> None:
    """Name the process in ps/top, as operators expect from a pre-fork server."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        return
    name = cfg.proc_name or "django-prefork"
    setproctitle(f"{name}: {role}")


def freeze_before_fork() -> None:
    """Move every object the forking process holds (Django, the project, its settings) out
    of the cyclic GC's reach before a worker is forked from it.

    A worker's collections would otherwise walk those objects and write to their headers,
    copying each page they share with the master or the zygote: gevent Django hello, PSS per
    worker 30.7 -> 23.3 MB (docs/benchmarks.md). They are long-lived anyway; the worker's own
    objects are collected as usual. (gc.freeze is meant for this: see its documentation.)
    """
    gc.freeze()


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim).

    Importing Django and the project frees a few MB that glibc keeps resident. In a zygote
    every worker forked after it would share those pages for nothing, and the zygote would
    hold them alone once the workers have copied the pages around them: 4 sync workers,
    whole-tree PSS 90 -> 86 MB (docs/architecture.md, "Memory model"). A no-op where the C
    library has no malloc_trim (musl, macOS).
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)

