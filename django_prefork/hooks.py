"""gunicorn's server hooks: finding them, the objects they receive, and calling them safely.

A hook comes from a ``-c gunicorn.conf.py`` function or a PREFORK dotted path
(``"POST_FORK": "myproject.hooks.post_fork"``); ``cfg.hooks`` holds the union. Hooks receive
small views (``HookServer``, ``HookWorker``, ``HookRequest``, ``HookResponse``) offering what
gunicorn hooks use, so a hook written for gunicorn runs unchanged. Where and when each hook
runs is in docs/hooks.md.

This module imports nothing from the rest of the package, so the settings loader can use it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "HOOK_ARITY", "HookError", "HookRequest", "HookResponse", "HookServer", "HookWorker",
    "RequestHooks", "call_hook", "check_hook_arity", "import_hook",
]

log = logging.getLogger("django_prefork.error")

#: gunicorn's server hooks and how many positional arguments gunicorn passes each.
HOOK_ARITY: dict[str, int] = {
    "on_starting": 1,          # (server)
    "on_reload": 1,            # (server)
    "when_ready": 1,           # (server)
    "pre_fork": 2,             # (server, worker)
    "post_fork": 2,            # (server, worker)
    "post_worker_init": 1,     # (worker)
    "worker_int": 1,           # (worker)
    "worker_abort": 1,         # (worker)
    "pre_exec": 1,             # (server)
    "pre_request": 2,          # (worker, req)
    "post_request": 4,         # (worker, req, environ, resp)
    "child_exit": 2,           # (server, worker)
    "worker_exit": 2,          # (server, worker)
    "nworkers_changed": 3,     # (server, new_value, old_value)
    "on_exit": 1,              # (server)
    "ssl_context": 2,          # (config, default_ssl_context_factory)
}

#: The hooks this module calls; ssl_context is called by http/tls.py.
CALLED_HOOKS = tuple(name for name in HOOK_ARITY if name != "ssl_context")


class HookError(ValueError):
    """A hook named by a dotted path cannot be used; the message says why."""


def check_hook_arity(name: str, hook: Any) -> str | None:
    """None if ``hook`` can be called as gunicorn calls hook ``name``, else the reason."""
    arity = HOOK_ARITY[name]
    plural = "s" if arity > 1 else ""
    if not callable(hook):
        return f"is not callable (define def {name}(...) taking {arity} argument{plural})"
    try:
        inspect.signature(hook).bind(*range(arity))
    except TypeError:
        return f"must accept {arity} positional argument{plural}, as gunicorn passes them"
    except ValueError:
        pass  # no signature to read (a builtin): trust it
    return None


def import_hook(name: str, path: str) -> Callable[..., Any]:
    """Import the hook ``name`` from the dotted ``path``; HookError says what is wrong."""
    module_name, _, attribute = path.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise HookError(f"cannot be imported ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # the module raised while it was imported
        raise HookError(f"its module raised {type(exc).__name__}: {exc}") from None
    problem = check_hook_arity(name, hook)
    if problem:
        raise HookError(problem)
    return hook  # type: ignore[no-any-return]


def call_hook(hooks: Mapping[str, Callable[..., Any]], name: str, *args: Any,
              reraise: bool = False) -> None:
    """Call hook ``name`` if it is set. An exception is logged (one error line naming the
    hook, its traceback at debug level) and swallowed, so a hook never ends the master;
    ``reraise`` passes it on where gunicorn lets it fail the worker (post_fork, a boot)."""
    hook = hooks.get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception as exc:
        log.error("Hook %s raised %s: %s", name, type(exc).__name__, exc)
        log.debug("Hook %s traceback", name, exc_info=True)
        if reraise:
            raise


class HookServer:
    """What a hook's ``server`` argument offers (gunicorn's Arbiter): pid, cfg, log,
    num_workers and the workers by pid."""

    def __init__(self, cfg: Any, pid: int | None = None, arbiter: Any = None) -> None:
        self._arbiter = arbiter
        self._cfg = cfg
        self.pid = pid if pid is not None else os.getpid()
        self.log = log

    @property
    def cfg(self) -> Any:
        return self._arbiter.cfg if self._arbiter is not None else self._cfg

    @property
    def num_workers(self) -> int:
        return int(self._arbiter.num_workers) if self._arbiter is not None else 0

    @property
    def WORKERS(self) -> dict[int, HookWorker]:  # gunicorn's name
        if self._arbiter is None:
            return {}
        return {pid: HookWorker(self.cfg, record.age, pid, self.pid)
                for pid, record in self._arbiter.workers.items()}


class HookWorker:
    """A hook's ``worker`` in the master (pre_fork, child_exit: pid None before the fork, as
    the worker is not running yet) or the worker process's own (``worker_of``)."""

    def __init__(self, cfg: Any, age: int, pid: int | None, ppid: int,
                 worker: Any = None) -> None:
        self.cfg = cfg
        self.age = age
        self.pid = pid
        self.ppid = ppid
        self.log = log
        self._worker = worker

    @property
    def alive(self) -> bool:
        return bool(self._worker.alive) if self._worker is not None else self.pid is not None

    @property
    def booted(self) -> bool:
        return self._worker is not None and self._worker.ctx is not None

    @property
    def wsgi(self) -> Any:
        return self._worker.app if self._worker is not None else None

    def __getattr__(self, name: str) -> Any:
        # Anything else a hook reads from gunicorn's worker (e.g. ``tmp``, ``nr``) comes
        # from our worker object, where it has one.
        worker = self.__dict__.get("_worker")
        if worker is None:
            raise AttributeError(name)
        return getattr(worker, name)


def worker_of(worker: Any) -> HookWorker:
    """The hook view of the worker running in this process."""
    return HookWorker(worker.cfg, worker.age, worker.pid, worker.ppid, worker)


class HookRequest:
    """A hook's ``req``: gunicorn's request attributes, from the parsed head."""

    __slots__ = ("headers", "method", "path", "query", "uri", "version")

    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.uri = target
        path, _, self.query = target.partition("?")
        self.path = path
        major, _, minor = version.partition(".")
        self.version = (int(major or 1), int(minor or 0))
        self.headers = [(n.decode("latin-1").upper(), v.decode("latin-1"))
                        for n, v in headers]


class HookResponse:
    """A hook's ``resp`` in post_request: status, status_code, headers, sent."""

    __slots__ = ("headers", "sent", "status", "status_code")

    def __init__(self, status: str | None, headers: list[tuple[str, str]], sent: int) -> None:
        self.status = status or "500 Internal Server Error"
        code = self.status.split(" ", 1)[0]
        self.status_code = int(code) if code.isdigit() else None
        self.headers = list(headers)
        self.sent = sent


class RequestHooks:
    """pre_request / post_request for one worker; the HTTP core holds one only when either
    hook is set, so requests cost nothing without them."""

    def __init__(self, hooks: Mapping[str, Callable[..., Any]], worker: HookWorker) -> None:
        self.pre_request = hooks.get("pre_request")
        self.post_request = hooks.get("post_request")
        self.worker = worker

    @classmethod
    def for_worker(cls, hooks: Mapping[str, Callable[..., Any]],
                   worker: HookWorker) -> RequestHooks | None:
        if hooks.get("pre_request") is None and hooks.get("post_request") is None:
            return None
        return cls(hooks, worker)

    def before(self, head: Any) -> HookRequest:
        """pre_request; as in gunicorn, it runs where the app does, so an exception it
        raises is answered like an app's (500). The request view is made first
        so post_request runs even then, as gunicorn's does."""
        return HookRequest(head.method, head.target, head.version, head.headers)

    def pre(self, req: HookRequest) -> None:
        if self.pre_request is not None:
            try:
                self.pre_request(self.worker, req)
            except Exception as exc:
                log.error("Hook pre_request raised %s: %s", type(exc).__name__, exc)
                raise

    def after(self, req: HookRequest, environ: dict[str, Any], status: str | None,
              headers: list[tuple[str, str]], sent: int) -> None:
        """post_request, after the response went out; an exception is logged only."""
        if self.post_request is None:
            return
        call_hook({"post_request": self.post_request}, "post_request", self.worker, req, environ,
                  HookResponse(status, headers, sent))
