"""What every worker class shares: life cycle, heartbeat, signals, recycling.

A worker class only decides how connections are accepted and scheduled (`run()`); the HTTP
work is done by the shared core in `django_prefork.http`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from django_prefork.hooks import HookServer, RequestHooks, call_hook, worker_of
from django_prefork.http.connection import ServerContext
from django_prefork.http.errors import error_response
from django_prefork.http.settings import CoreSettings
from django_prefork.http.tls import load_server_tls
from django_prefork.server.sockets import Listener
from django_prefork.workers import worker_class_for
from django_prefork.workers.accept import AcceptPolicy
from django_prefork.workers.drain import Drain, close_listener_copy
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.importwatch import ImportReporter
from django_prefork.workers.inflight import RequestTracker, RequestWatch, Running
from django_prefork.workers.loadboard import LoadBoard
from django_prefork.workers.process import WORKER_BOOT_ERROR, set_process_title

log = logging.getLogger("django_prefork.error")

# Heartbeat, parent check and signal work run at most this often while busy: an fchmod and a
# getppid per request cost ~3% of a hello-world request (bench/profile_worker.py).
HOUSEKEEPING_INTERVAL = 0.2

#: The signals a worker handles or ignores (install_signal_handlers).
WORKER_SIGNALS = frozenset({
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGABRT,
    signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH,
})

class Worker:
    """A worker process. The master supplies listeners, config and heartbeat; we serve."""

    #: PEP 3333 flags for the environ: a worker class that runs requests concurrently in one
    #: process overrides this.
    multithread = False
    #: Whether the HTTP core may keep connections open between requests.
    keepalive = False
    #: Client sockets stay in blocking mode, their timeouts set in the kernel (SO_RCVTIMEO,
    #: SO_SNDTIMEO), so the HTTP core may try a recv with MSG_DONTWAIT (ServerContext).
    blocking_sockets = False

    def __init__(
        self,
        *,
        age: int,
        ppid: int,
        listeners: list[Listener],
        cfg: Any,
        heartbeat: Heartbeat,
        app: Any = None,
        board: LoadBoard | None = None,
    ) -> None:
        self.age = age
        self.ppid = ppid
        self.pid = os.getpid()
        self.listeners = listeners
        self.cfg = cfg
        self.heartbeat = heartbeat
        # Shared with the other workers (fair accept); a worker made without one (tests) has
        # a board of its own, where no one is ever less loaded.
        self.board = board if board is not None else LoadBoard()
        self.app = app
        self.alive = True
        self.requests_served = 0
        self.max_requests = self._pick_max_requests(cfg)
        self.reopen_logs_requested = False
        self._next_housekeeping = 0.0
        self._exit_hook_called = False
        self.ctx: ServerContext | None = None
        #: --reload: tells the master of modules imported after the boot (importwatch.py).
        self.imports: ImportReporter | None = None
        #: Every accept() of every class goes through it (workers/accept.py).
        self.accept_policy = AcceptPolicy()
        #: Set once the worker stops accepting new work (workers/drain.py).
        self.drain: Drain | None = None
        #: The drain leaves queued connections to others (a max_requests recycle).
        self.leave_queue = False
        #: The requests running now, by thread or greenlet, and their timeout.
        self.tracker = self.make_tracker()
        self.watch = self.make_watch()
        # Beat at least twice per timeout so a healthy idle worker is never killed.
        self.poll_interval = min(1.0, cfg.timeout / 2) if cfg.timeout else 1.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Prepare the process, load the app, tell the master we are ready, then serve."""
        self.pid = os.getpid()
        random.seed()  # a forked worker must not share the master's random state
        self.set_process_title()
        self.install_signal_handlers()
        try:
            if self.app is None:
                self.app = load_wsgi_app()
            self.ctx = self.make_context()
            # gunicorn: post_worker_init once the app is loaded; an exception fails the boot.
            call_hook(self.cfg.hooks, "post_worker_init", worker_of(self), reraise=True)
            tune_malloc()
            self.heartbeat.mark_ready()
            if getattr(self.cfg, "reload", False):
                self.imports = ImportReporter(self.heartbeat.fd)
            log.info("Booted worker with pid: %s", self.pid)
            self.run()
            log.info("Worker exiting (pid: %s)", self.pid)
        finally:
            self.exiting()

    def exiting(self) -> None:
        """gunicorn's worker_exit(server, worker), once, in the worker as it leaves however
        it leaves (served, failed to boot, ABRT): gunicorn runs it in a `finally`. An
        exception in it is only logged."""
        if self._exit_hook_called:
            return
        self._exit_hook_called = True
        call_hook(self.cfg.hooks, "worker_exit", HookServer(self.cfg, self.ppid),
                  worker_of(self))

    def post_fork(self) -> None:
        """gunicorn's post_fork(server, worker): in the new worker, before the app loads; an
        exception fails the worker's boot (WORKER_BOOT_ERROR), as it does in gunicorn."""
        call_hook(self.cfg.hooks, "post_fork", HookServer(self.cfg, self.ppid),
                  worker_of(self), reraise=True)

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_tracker(self) -> RequestTracker:
        """Requests are tracked per thread; the gevent worker tracks greenlets."""
        return RequestTracker()

    def make_watch(self) -> RequestWatch:
        return RequestWatch(self.tracker, self.cfg.timeout, self.stop_request)

    def stop_request(self, running: Running) -> None:  # pragma: no cover - abstract
        """Stop a request that ran past `timeout` (how depends on the class)."""
        raise NotImplementedError

    def make_context(self) -> ServerContext:
        from django_prefork.logging import make_access_logger
        from django_prefork.metrics.health import make_health_check
        from django_prefork.metrics.recorder import make_recorder

        ctx = ServerContext(
            self.app,
            CoreSettings.from_config(self.cfg),
            access_log=make_access_logger(self.cfg),
            error_log=log,
            multithread=self.multithread,
            multiprocess=True,
            keepalive=self.keepalive,
            recv_first=self.blocking_sockets,
            recorder=make_recorder(self.cfg, self.board.fd, self.pid, self.multithread),
            health_check=make_health_check(self.cfg, self.board.fd),
        )
        ctx.request_tracker = self.tracker
        # None without pre_request/post_request: the HTTP core then skips them at no cost.
        ctx.request_hooks = RequestHooks.for_worker(self.cfg.hooks, worker_of(self))
        # Read at every boot: a HUP's new generation serves the certificate files as they are.
        ctx.tls = load_server_tls(self.cfg)
        self.tracker.publish_to(ctx.recorder)  # what it serves now, for preforkctl status
        return ctx

    def set_process_title(self) -> None:
        set_process_title("worker", self.cfg)

    # -- checks made between requests ------------------------------------------------------
    def parent_alive(self) -> bool:
        if os.getppid() != self.ppid:
            log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def look_after_ourselves(self) -> bool:
        """Beat, do signal work and check the master, at most every HOUSEKEEPING_INTERVAL.

        Returns False once the master is gone (the worker must stop).
        """
        now = time.monotonic()
        if now < self._next_housekeeping:
            return True
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self.heartbeat.beat()
        self.watch.check()
        self.handle_pending_work()
        if self.imports is not None:
            self.report_imports()
        return self.parent_alive()

    def report_imports(self) -> None:
        """--reload: tell the master of modules imported since the last look. A failure here
        only ends the reporting (logged once): it must never stop the serving."""
        assert self.imports is not None
        try:
            self.imports.report_new()
        except Exception:
            log.exception("--reload: the files this worker imported cannot be reported; "
                          "edits to them will not reload")
            self.imports = None

    def begin_drain(self, close: Callable[[Listener], None] = close_listener_copy) -> Drain:
        """Stop accepting new work and start the drain protocol (workers/drain.py)."""
        self.stop_accepting()
        if self.drain is None:
            self.drain = Drain(self.listeners, self.cfg.graceful_timeout,
                               0 if self.leave_queue else self.cfg.backlog,
                               self.accept_policy, close)
        return self.drain

    def housekeeping_now(self) -> None:
        """Idle or woken by a signal: look after ourselves on the next turn."""
        self._next_housekeeping = 0.0

    def request_done(self) -> None:
        """Count a served request; recycle the worker once max_requests is reached."""
        self.requests_served += 1
        if self.max_requests and self.requests_served >= self.max_requests and self.alive:
            log.info("Autorestarting worker after current request (max_requests %s).",
                     self.max_requests)
            # Our own choice while the master serves on: connections queued now wait for
            # the other workers or our replacement (the master keeps the listener open), so
            # max_requests really bounds what this process serves.
            self.leave_queue = True
            self.stop_accepting()

    def stop_accepting(self) -> None:
        self.alive = False
        if self.ctx is not None:
            self.ctx.draining = True
        self.wake()

    def handle_pending_work(self) -> None:
        if self.reopen_logs_requested:
            self.reopen_logs_requested = False
            from django_prefork.logging import reopen_log_files

            reopen_log_files()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b".")
        except (BlockingIOError, OSError):
            pass

    def drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- signals ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Our handlers for every signal the master or an operator sends a worker. Called
        before the app loads (run_worker_in_child), and again by start() (idempotent)."""
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)  # the master's signals, not ours
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGABRT, self._on_abort)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)

    def _on_term(self, signum: int, frame: Any) -> None:
        # Graceful: finish the request in hand, accept no more.
        self.stop_accepting()

    def _on_quit(self, signum: int, frame: Any) -> None:
        self.alive = False
        call_hook(self.cfg.hooks, "worker_int", worker_of(self))  # gunicorn: INT and QUIT
        sys.exit(0)

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.reopen_logs_requested = True
        self.wake()

    def _on_abort(self, signum: int, frame: Any) -> None:
        # The master found our heartbeat too old: say which request hung and where, and
        # answer its client if nothing of the response went out yet (as gunicorn 27 does).
        current = self.tracker.current()
        hung = [current] if current is not None else self.tracker.running()
        stack = "".join(traceback.format_stack(frame)) if frame else ""
        log.critical("WORKER TIMEOUT (pid:%s) while serving %s\n%s", self.pid,
                     ", ".join(r.request_line for r in hung) or "no request", stack.rstrip())
        for running in hung:
            answer_stopped(running.conn, 500)
        call_hook(self.cfg.hooks, "worker_abort", worker_of(self))
        self.exiting()  # gunicorn's abort ends in sys.exit(1): its worker_exit runs too
        os._exit(1)

    @staticmethod
    def _pick_max_requests(cfg: Any) -> int:
        if not cfg.max_requests:
            return 0
        # Jitter spreads restarts so all workers do not recycle at the same moment.
        return int(cfg.max_requests) + random.randint(0, cfg.max_requests_jitter or 0)

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self.pid}>"


def answer_stopped(conn: Any, status: int) -> None:
    """End the connection of a request we stop: with `status` if no byte of its response
    went out yet, else just closed (the client sees a truncated response, not a whole one).
    The shutdown also makes the stopped code's own later writes fail."""
    sock = conn.sock
    if not conn.response_started:
        with contextlib.suppress(OSError):
            sock.sendall(error_response(status))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def load_wsgi_app() -> Any:
    """Load settings.WSGI_APPLICATION as runserver does, without applying LOGGING twice.

    The WSGI module calls get_wsgi_application(), that is django.setup(), which applies
    LOGGING. Where Django is already set up in this process (the master, the zygote and their
    forks, a fresh worker's boot), LOGGING was applied before the project's modules were
    imported; applying it again would disable every logger they created since
    (``disable_existing_loggers`` defaults to True), and a site's own log lines would vanish.
    Under gunicorn a worker sets Django up once: so do we.
    """
    from django.apps import apps

    if not apps.ready:
        return _wsgi_application_from_settings()
    with _logging_already_configured():
        return _wsgi_application_from_settings()


def _wsgi_application_from_settings() -> Any:
    """What Django's get_internal_wsgi_application() returns, with its error message.

    Not imported from django.core.servers.basehttp: that module brings runserver's server
    (http.server, socketserver, wsgiref) into every forked worker, 1 MB of private pages
    of which none serves a request here (docs/architecture.md, "Memory model").
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    app_path = getattr(settings, "WSGI_APPLICATION", None)
    if app_path is None:
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    try:
        return import_string(app_path)
    except ImportError as err:
        raise ImproperlyConfigured(
            f"WSGI application '{app_path}' could not be loaded; Error importing module."
        ) from err


@contextlib.contextmanager
def _logging_already_configured() -> Iterator[None]:
    """Make django.setup() skip its LOGGING step (it looks the function up on each call)."""
    from django.utils import log as django_log

    original = django_log.configure_logging

    def keep_the_logging_in_place(logging_config: Any, logging_settings: Any) -> None:
        return None

    django_log.configure_logging = keep_the_logging_in_place
    try:
        yield
    finally:
        django_log.configure_logging = original


#: Linux copies SO_RCVTIMEO/SO_SNDTIMEO from a listening socket to the sockets it accepts,
#: so a client timeout costs nothing per connection: no settimeout() call, and no poll()
#: before every recv/send as CPython does for sockets in timeout mode.
KERNEL_TIMEOUTS_INHERITED = sys.platform.startswith("linux")


def set_kernel_timeouts(sock: Any, seconds: float) -> None:
    """Timeouts for a blocking socket's recv/send, kept by the kernel (EAGAIN when over)."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


#: glibc malloc: blocks up to this size come from the heap, not from a mmap of their own...
MALLOC_MMAP_THRESHOLD = 4 * 1024 * 1024
#: ... and the heap keeps up to this much free memory instead of returning it to the system.
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024
#: ... and threads share at most this many heaps (glibc's default: 8 per core, each keeping
#: its own free memory; Python threads allocate under the GIL, so they hardly contend).
MALLOC_ARENA_MAX = 2
#: Set to 1 to leave glibc's malloc as it is.
NO_MALLOPT_ENV = "DJANGO_PREFORK_NO_MALLOPT"


def tune_malloc() -> None:
    """Let glibc keep freed request-sized memory for the next request, in few heaps (Linux,
    glibc only).

    A request body is one object of its size (a 1 MB upload: 1 MB), and Django's request
    objects are reference cycles, freed only by the cyclic GC some requests later. glibc's
    defaults (blocks over 128 KB mmapped; the heap trimmed past twice that) then hand those
    pages back to the kernel after every collection and fault them in again: ~250 page faults
    per 1 MB upload, sync upload row 0.81x gunicorn. With these thresholds: 1.46x, p99 19 vs
    27 ms, PSS per worker still below gunicorn's (docs/benchmarks.md). Two arenas keep the
    threads of a gthread worker from each keeping such memory: gthread upload row, PSS per
    worker 130 -> 117 MB (gunicorn: 131-141).
    """
    if os.environ.get(NO_MALLOPT_ENV) == "1" or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    mallopt(_M_ARENA_MAX, MALLOC_ARENA_MAX)


_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def run_worker_in_child(
    *, cfg: Any, listeners: list[Listener], heartbeat: Heartbeat, age: int, ppid: int,
    app: Any = None, board: LoadBoard | None = None,
) -> int:
    """Turn a freshly forked child into a worker and serve; return the exit status.

    Shared by the master's own forks and the zygote's. The worker's signal handlers go in
    before anything slow (issue 15.6: a USR1 or TERM while the app loaded killed the worker
    by the default action), and the signals are blocked until then. The app is loaded here
    unless it was preloaded, so a broken project fails in one worker, reported once, with
    WORKER_BOOT_ERROR.
    """
    import logging as std_logging

    from django_prefork.logging import configure_logging

    status = 0
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        try:
            worker = worker_class_for(cfg.worker_class, cfg)(
                age=age, ppid=ppid, listeners=listeners, cfg=cfg, heartbeat=heartbeat,
                app=app, board=board,
            )
            worker.install_signal_handlers()
        finally:
            # What arrived meanwhile is delivered now, to the handlers: noted, acted on once
            # the worker runs (a TERM makes it drain and exit as soon as it starts).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
        try:
            worker.post_fork()
        except Exception:
            sys.stderr.write("Worker failed to boot: post_fork raised:\n" + traceback.format_exc())
            sys.stderr.flush()
            worker.exiting()
            return WORKER_BOOT_ERROR
        # gunicorn's order: post_fork, then the worker becomes USER/GROUP, then the app
        # loads. (Forked by a zygote, it already runs as them: a no-op.)
        from django_prefork.server.privileges import PrivilegeError, drop_privileges

        try:
            drop_privileges(cfg)
        except PrivilegeError as exc:
            sys.stderr.write(f"Worker failed to boot: {exc}\n")
            sys.stderr.flush()
            return WORKER_BOOT_ERROR
        if app is None:
            try:
                from django_prefork.workers.project import load_urlconf, warm_up

                worker.app = load_wsgi_app()
                load_urlconf()  # a broken view fails the boot, not the first request
                warm_up(worker.app, cfg)  # RELOAD_WARMUP_PATH, if set
            except Exception:
                sys.stderr.write("Worker failed to boot:\n" + traceback.format_exc())
                sys.stderr.flush()
                worker.exiting()
                return WORKER_BOOT_ERROR
            # Loading the app may re-apply LOGGING (django.setup()): wire ours again.
            configure_logging(cfg)
        worker.start()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("Exception in worker process")
        status = 1
    finally:
        std_logging.shutdown()
    return status
