"""The master process: starts generations of workers, watches them, answers signals. It never
serves.

The loop is a handful of named steps run once per wake-up, none of which waits on anything:

    wait for a signal, a generation's message or a tick (at most 1 s)
    → handle queued signals → take the generations' events → reap dead workers
    → kill hung workers → keep the worker count (rolling a reload) → finish a reload

Signal handlers only queue the signal number and write to a self-pipe, so all the work above
happens in ordinary code, never inside a handler. Each signal has a method `handle_<name>`
(`handle_hup`, `handle_term`, ...), looked up by name as gunicorn's arbiter does.

Workers are started through one contract, `server/starter.py`: a generation boots on its own
(a zygote reading the settings and code, or nothing to wait for when the master forks), tells
the loop when it is ready or why it failed, and reports each worker it starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from django_prefork.conf import Config, parse_bind
from django_prefork.hooks import HookServer, HookWorker, call_hook
from django_prefork.metrics.master import MasterObserver, exit_reason
from django_prefork.server.control import ControlServer, ControlSocketError, open_control_server
from django_prefork.server.devreload import DevReloader, InotifyUnavailable, WatchList
from django_prefork.server.notify import Notifier
from django_prefork.server.pidfile import Pidfile
from django_prefork.server.signals import STRAY_SIGNALS, StraySignals, in_terminal_foreground
from django_prefork.server.sockets import BindError, Listener, reconcile_listeners
from django_prefork.server.starter import (
    READY,
    Event,
    Generation,
    GenerationFailed,
    GenerationReady,
    WatchListReported,
    WorkerStarted,
    start_generation,
)
from django_prefork.server.upgrade import BinaryUpgrade
from django_prefork.server.zygote import become_subreaper
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.importwatch import REPORT_OFFSET, read_reports
from django_prefork.workers.loadboard import LoadBoard
from django_prefork.workers.process import WORKER_BOOT_ERROR, freeze_before_fork, set_process_title

log = logging.getLogger("django_prefork.error")

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCHLD,
)
#: Every signal the master catches: held (blocked) from the banner until its handlers exist.
MASTER_SIGNALS = (*HANDLED_SIGNALS, *STRAY_SIGNALS)
# The longest the loop sleeps: signals wake it at once, this bounds the timeout checks.
TICK = 1.0
# While workers boot the loop looks at their heartbeats this often, so the rest of a
# generation (and the retirement of old workers on reload) follows without delay.
BOOT_TICK = 0.05
# A worker still importing the project is not "hung" until this long, whatever the timeout.
MIN_BOOT_TIMEOUT = 30.0
# After SIGABRT a hung worker gets this long to log its stack before SIGKILL.
ABORT_GRACE = 2.0
# A reload starts its second new worker once the old zygotes have exited, or after this long.
OLD_ZYGOTE_GRACE = 5.0
# A generation whose zygote keeps failing is started again at most this often.
RESTART_BACKOFF = 5.0
# After a worker of a generation that serves fails to boot, the next start waits this long,
# twice as long after each further failure in a row, up to BOOT_RETRY_MAX.
BOOT_RETRY_FIRST = 1.0
BOOT_RETRY_MAX = 30.0
# Exits of processes reaped before their WorkerStarted event arrived, kept at most this many.
MAX_UNCLAIMED = 128


class HaltServer(Exception):
    """Stop the master with an exit code and one line saying why."""

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


@dataclass
class WorkerRecord:
    pid: int
    age: int
    generation: int
    heartbeat: Heartbeat
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    retiring: bool = False  # sent TERM: counted no more, waited for until it exits
    aborted_at: float | None = None
    killed: bool = False
    #: --reload: how far its heartbeat file's import reports are read (importwatch.py).
    reports_read: int = REPORT_OFFSET


@dataclass
class Rollout:
    """A reload in progress: what to go back to if the new workers cannot boot."""

    previous_generation: int
    previous_cfg: Config
    previous_listeners: list[Listener]
    added: list[Listener]  # opened for the new bind list; closed on rollback
    removed: list[Listener]  # left out of the new bind list; closed once the reload is done


class Arbiter:
    """Supervises the workers for one runprefork invocation."""

    def __init__(
        self,
        cfg: Config,
        listeners: list[Listener],
        *,
        cli_overrides: dict[str, Any] | None = None,
        app: Any = None,
        share_master: bool = True,
        metrics_listener: Listener | None = None,
    ) -> None:
        self.cfg = cfg
        # Whether the first generation forks from this process (it has Django imported);
        # the lean master (server/master.py) has not, and starts every generation in a zygote.
        self.share_master = share_master
        self.listeners = listeners
        self.cli_overrides = cli_overrides or {}
        self.app = app  # set with --preload: workers are forked with the app already loaded
        self.pid = os.getpid()
        self.workers: dict[int, WorkerRecord] = {}
        #: Generations that may start workers, by number; `generation` is the one whose
        #: worker count is kept, `pending` one still booting after a HUP.
        self.generations: dict[int, Generation] = {}
        self.generation = 0
        self.generation_booted = False  # a worker of the current generation became ready
        self.pending: int | None = None
        self.rollout: Rollout | None = None
        self.reload_deferred = False  # a HUP came before any worker served
        #: Stopped generations still owed a process exit or a fork report.
        self.stopped_generations: list[Generation] = []
        self._older_dropped_at = 0.0  # when _drop_older_generations last stopped a zygote
        self._last_generation = 0
        self._restart_at: float | None = None  # when to start the current generation again
        self._boot_failures = 0  # workers of the serving generation that failed to boot, in a row
        self._last_boot_failure = 0.0
        self._starts_held_until = 0.0  # no worker starts before this (time.monotonic())
        self._unclaimed_exits: dict[int, int] = {}
        self.worker_age = 0
        #: What hooks receive as ``server`` (django_prefork/hooks.py).
        self.hook_server = HookServer(cfg, self.pid, self)
        self._num_workers: int | None = None
        self.num_workers = cfg.workers  # nworkers_changed(server, workers, None), as gunicorn
        self.signal_queue: list[int] = []
        self.stopping = False
        self.pidfile: Pidfile | None = None
        self.subreaper = False
        # Connections per worker, shared with every worker for fair accept (loadboard.py).
        self.board = LoadBoard()
        # systemd notifications (notify.py), the USR2 upgrade (upgrade.py), the signals with
        # no job here (signals.py).
        self.notifier = Notifier()
        self.upgrade = BinaryUpgrade(self.notifier)
        self.stray_signals = StraySignals()
        # Metrics, health, StatsD (django_prefork.metrics): the counters live past the load
        # board in its shared file; the endpoint is served by wait_for_wakeup's select.
        self.observer = MasterObserver(cfg, self.board.fd, metrics_listener, self)
        # preforkctl's control socket (server/control.py), opened by run(), served by the
        # observer's select.
        self.control: ControlServer | None = None
        # --reload (server/devreload.py): made when the first watch list arrives.
        self.devreload: DevReloader | None = None
        self._pipe_r, self._pipe_w = os.pipe()
        for fd in (self._pipe_r, self._pipe_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    # -- public ----------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return self._num_workers or 0

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        old, self._num_workers = self._num_workers, value
        if value != old:
            self.call_hook("nworkers_changed", value, old)

    def call_hook(self, name: str, *args: Any) -> None:
        """A master hook, given the server first; an exception is logged, never fatal."""
        call_hook(self.cfg.hooks, name, self.hook_server, *args)

    def run(self) -> int:
        """Run until stopped; return the process exit status."""
        self.start()
        try:
            self.open_control_socket()
            while True:
                self.wait_for_wakeup(self._tick())
                self.handle_signals()
                self.poll_generations()
                self.watch_files()
                self.reap_workers()
                self.murder_hung_workers()
                self.manage_workers()
                self.finish_reload()
                self.report_state()
        except StopServer as stop:
            return self.shutdown(graceful=stop.graceful, exit_status=0)
        except HaltServer as halt:
            log.error("Shutting down: %s", halt.reason)
            self.shutdown(graceful=False, exit_status=halt.exit_status)
            return halt.exit_status

    def start(self) -> None:
        set_process_title(self.upgrade.role(), self.cfg)
        if self.cfg.pidfile:
            # The new master of a binary upgrade writes PIDFILE.2 once it serves (report_state).
            self.pidfile = Pidfile(self.upgrade.pidfile_path(self.cfg.pidfile))
            if not self.upgrade.is_new_master:
                self.pidfile.create(self.pid)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._queue_signal)
        self.stray_signals.install(self._queue_signal)
        # Blocked across the lean master's execve (server/master.py): deliver them now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        # DJANGO_PREFORK_NO_ZYGOTE=1 takes the exec path that platforms without a child
        # subreaper use (each worker its own fresh interpreter): for tests and debugging.
        self.subreaper = not os.environ.get("DJANGO_PREFORK_NO_ZYGOTE") and become_subreaper()
        log.info("Starting django-prefork master (pid: %s)", self.pid)
        # gunicorn: on_starting as the master starts, when_ready once it listens (ours
        # already does: the command bound the sockets), both before the first worker.
        self.call_hook("on_starting")
        self.call_hook("when_ready")
        self.generations[0] = self._start_generation(0, reread=False)
        if self.cfg.reload and self.generations[0].method == "fork" and self.app is None:
            # Generation 0 forks from this process, which has the project imported (not
            # the lean master): no zygote lists its files, so list them here.
            from django_prefork.workers.reloadfiles import watch_list

            self._watch(watch_list(self.cfg))

    def open_control_socket(self) -> None:
        """The preforkctl socket; its commands queue signals as _queue_signal does."""
        try:
            self.control = open_control_server(self.cfg, self,
                                               takeover=self.upgrade.is_new_master)
        except ControlSocketError as exc:
            raise HaltServer(str(exc)) from None
        if self.control is not None:
            self.observer.services.append(self.control)
            log.info("Control socket at: %s", self.control.path)

    def close_control_socket(self) -> None:
        if self.control is not None:
            self.observer.services.remove(self.control)
            self.control.close()
            self.control = None

    # -- the loop's steps ------------------------------------------------------------------
    def _queue_signal(self, signum: int, frame: Any) -> None:
        if len(self.signal_queue) < 10 or signum == signal.SIGCHLD:
            self.signal_queue.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._pipe_w, b".")

    def _tick(self) -> float:
        tick = BOOT_TICK if any(not r.ready for r in self.workers.values()) else TICK
        if self.devreload is not None:
            wanted = self.devreload.timeout()
            if wanted is not None:
                tick = min(tick, wanted)
        return tick

    def wait_for_wakeup(self, timeout: float) -> None:
        if self.signal_queue:
            return
        fds = [self._pipe_r]
        for generation in self._all_generations():
            fds.extend(generation.fds())
        if self.devreload is not None:
            fds.extend(self.devreload.fds())
        try:
            ready = self.observer.select(fds, timeout)
        except OSError as exc:
            if exc.errno not in (errno.EINTR, errno.EBADF):
                raise
            return
        if self._pipe_r in ready:
            with contextlib.suppress(OSError):
                while os.read(self._pipe_r, 512):
                    pass

    def handle_signals(self) -> None:
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reap_workers runs next anyway
            if self.stray_signals.handles(signum):
                self.stray_signals.log_ignored(signum)
                continue
            name = signal.Signals(signum).name[3:].lower()
            log.info("Handling signal: %s", name)
            handler = getattr(self, f"handle_{name}", None)
            if handler is not None:
                handler()

    def poll_generations(self) -> None:
        """Take what every generation reports: ready, failed, a worker started."""
        for generation in self._all_generations():
            self._dispatch(generation, generation.poll())
        self.stopped_generations = [g for g in self.stopped_generations if not g.settled]

    def watch_files(self) -> None:
        """--reload: a watched file changed, so reload as a HUP does (without on_reload,
        which is the operator's). A generation that fails leaves the workers serving; the
        change is seen once, and the next save tries again."""
        if self.devreload is None or not self.cfg.reload or self.stopping:
            return
        self._adopt_imports()
        path = self.devreload.changed()
        if path is not None:
            log.info("Change detected in %s (--reload)", path)
            self.reload()

    def _adopt_imports(self) -> None:
        """Watch the files of modules the workers imported after their boot (a view's own
        imports, template tag libraries): they report them in their heartbeat files."""
        assert self.devreload is not None
        for record in self.workers.values():
            paths, record.reports_read = read_reports(record.heartbeat.fd, record.reports_read)
            if paths:
                log.debug("Worker %s imported %d more files: watching them too (--reload)",
                          record.pid, len(paths))
                self.devreload.adopt(WatchList(frozenset(paths), frozenset()))

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if self.upgrade.reap(pid, status, self.cfg):
                continue  # the new master of a USR2 upgrade, not a worker
            record = self.workers.pop(pid, None)
            if record is not None:
                self._worker_exited(record, status)
            elif not any(g.child_exited(pid, status) for g in self._all_generations()):
                # A zygote's worker whose WorkerStarted is still on the control socket.
                self._unclaimed_exits[pid] = status
                while len(self._unclaimed_exits) > MAX_UNCLAIMED:
                    del self._unclaimed_exits[next(iter(self._unclaimed_exits))]

    def murder_hung_workers(self) -> None:
        if not self.cfg.timeout:
            return
        now = time.time()
        for record in list(self.workers.values()):
            if record.killed:
                continue
            if record.aborted_at is not None:
                if time.monotonic() - record.aborted_at >= ABORT_GRACE:
                    self._kill(record.pid, signal.SIGKILL)
                    record.killed = True
                continue
            if not record.ready:
                record.ready = record.heartbeat.is_ready()
                if not record.ready:
                    limit = max(self.cfg.timeout, MIN_BOOT_TIMEOUT)
                    if time.monotonic() - record.started_at > limit:
                        log.critical("WORKER TIMEOUT (pid:%s) while booting", record.pid)
                        self._abort(record)
                    continue
            if now - record.heartbeat.last_beat() > self.cfg.timeout:
                log.critical("WORKER TIMEOUT (pid:%s)", record.pid)
                self._abort(record)

    def manage_workers(self) -> None:
        """Keep num_workers serving workers of the current generation.

        During a reload the old workers count too: new ones start `reload_batch` at a time,
        and an old one retires only once a new one serves in its place.
        """
        self._refresh_readiness()
        if self.rollout is not None and self.generation_booted:
            self._drop_older_generations()
        current = self._current_workers()
        older = [r for r in self.workers.values()
                 if r.generation < self.generation and not r.retiring]
        generation = self.generations.get(self.generation)
        if generation is not None and generation.state == READY:
            self._start_missing_workers(generation, current, older)
        elif self._restart_at is not None:
            self._restart_generation()
        current = self._current_workers()
        if older:
            serving = sum(1 for r in current if r.ready)
            surplus = len(older) + serving - self.num_workers
            for record in sorted(older, key=lambda r: r.age)[:max(0, surplus)]:
                self._retire(record)
        elif len(current) > self.num_workers:
            oldest = sorted(current, key=lambda r: r.age)[: len(current) - self.num_workers]
            for record in oldest:
                self._retire(record)

    def finish_reload(self) -> None:
        """Once no old worker is left, close the listeners the reload removed; then run a
        HUP that had to wait for a generation to serve."""
        if self.reload_deferred and self.generation_booted:
            self.reload()
        if self.rollout is None or not self.generation_booted:
            return
        if any(r.generation < self.generation and not r.retiring
               for r in self.workers.values()):
            return
        for listener in self.rollout.removed:
            log.info("Stopped listening at: %s", listener.url())
            listener.close()
        self.rollout = None
        log.info("Reload complete: generation %s serves", self.generation)

    # -- signals ---------------------------------------------------------------------------
    def handle_hup(self) -> None:
        self.notifier.reload_started()
        self.call_hook("on_reload")
        self.reload()

    def handle_term(self) -> None:
        raise StopServer(graceful=True)

    def handle_int(self) -> None:
        raise StopServer(graceful=False)

    def handle_quit(self) -> None:
        raise StopServer(graceful=False)

    def handle_ttin(self) -> None:
        self.num_workers += 1

    def handle_ttou(self) -> None:
        # Never below one, as gunicorn; at zero (after WINCH) TTOU changes nothing.
        if self.num_workers > 1:
            self.num_workers -= 1

    def handle_usr1(self) -> None:
        self.reopen_logs()

    # -- binary upgrade, WINCH, sd_notify (logic in upgrade.py, signals.py, notify.py) ---------
    def handle_usr2(self) -> None:
        """USR2: start a new master on our sockets (server/upgrade.py); we keep serving."""
        self.upgrade.start(self.cfg, self.listeners, self.observer.listener_fd())

    def handle_winch(self) -> None:
        """WINCH: stop every worker gracefully, keep the master; HUP or TTIN starts them."""
        if in_terminal_foreground():
            # gunicorn acts on WINCH only when daemonized: in a terminal, a resize sends it.
            log.info("WINCH ignored: the master runs in the foreground of a terminal, whose "
                     "window resizes send it")
            return
        log.info("Stopping all workers gracefully (WINCH); HUP or TTIN starts them again")
        self.observer.set_ready(False)  # load balancers stop sending to this instance
        self.num_workers = 0
        for record in list(self.workers.values()):
            if not record.retiring:
                self._retire(record)

    def report_state(self) -> None:
        """Once per loop turn: the upgrade's pidfile takeover, and READY=1 for systemd."""
        self.upgrade.tick(self.cfg, self.pidfile, self.listeners, self.cfg.pidfile)
        old_serving = any(r.generation < self.generation and not r.retiring
                          for r in self.workers.values())
        if self.generation_booted and not old_serving and self.pending is None:
            self.upgrade.serving(self.pidfile)
            plural = "s" if self.num_workers != 1 else ""
            self.notifier.serving(f"Serving with {self.num_workers} worker{plural}")

    # -- actions ---------------------------------------------------------------------------
    def reload(self) -> None:
        """HUP: boot a new generation, which reads the settings and code again.

        It serves only once ready (settings valid, URLconf loaded); until then, and for good
        if it fails, the current workers go on serving.
        """
        self._refresh_readiness()
        current = self.generations.get(self.generation)
        if current is None or current.state != READY or not self.generation_booted:
            # Nothing proven to serve yet that a new generation could fall back on: reload
            # once something does (finish_reload).
            log.info("Reload deferred until generation %s has a worker serving",
                     self.generation)
            self.reload_deferred = True
            return
        self.reload_deferred = False
        if self.pending is not None:
            log.info("Reload restarted: generation %s had not finished booting", self.pending)
            self._drop_generation(self.pending)
        self._last_generation += 1
        number = self._last_generation
        self.generations[number] = self._start_generation(number, reread=True)
        self.pending = number
        log.info("Reloading: starting generation %s", number)

    def spawn_worker(self, generation: Generation) -> None:
        self.worker_age += 1
        # pre_fork runs here, in the master, for every start method: a zygote forks the
        # worker on this request, an exec generation starts it; pid is None until then.
        self.call_hook("pre_fork", HookWorker(self.cfg, self.worker_age, None, self.pid))
        # In worker_tmp_dir, owned by the workers' user (server/privileges.py).
        generation.start_worker(self.worker_age, Heartbeat.for_worker(generation.cfg))
        self._dispatch(generation, generation.poll())

    def reopen_logs(self) -> None:
        from django_prefork.logging import reopen_log_files

        reopen_log_files()
        for pid in list(self.workers):
            self._kill(pid, signal.SIGUSR1)

    def shutdown(self, *, graceful: bool, exit_status: int) -> int:
        """Close the listeners, stop every worker (gracefully or not), clean up."""
        self.stopping = True
        self.upgrade.notify_stop()
        self.observer.set_ready(False)  # load balancers stop sending before we close
        for listener in self.listeners:
            listener.close()
        if self.rollout is not None:
            for listener in self.rollout.removed:
                listener.close()
        for number in list(self.generations):
            self._drop_generation(number)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for pid in list(self.workers):
            self._kill(pid, sig)
        limit = self.cfg.graceful_timeout if graceful else 2.0
        deadline = time.monotonic() + limit
        while self.workers and time.monotonic() < deadline:
            self.reap_workers_quietly()
            if self.workers:
                self.observer.wait(0.05)  # still answering /-/ready (503) and /metrics
        for pid in list(self.workers):
            log.warning("Worker %s did not stop in time: killing it", pid)
            self._kill(pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while self.workers and time.monotonic() < end:
            self.reap_workers_quietly()
            time.sleep(0.02)
        self.close_control_socket()
        if self.devreload is not None:
            self.devreload.close()
        self.observer.close()
        if self.pidfile is not None:
            self.pidfile.unlink()
        self.call_hook("on_exit")
        log.info("Shutting down: master (pid: %s)", self.pid)
        return exit_status

    def reap_workers_quietly(self) -> None:
        try:
            self.reap_workers()
        except HaltServer:
            pass

    # -- generations -----------------------------------------------------------------------
    def _start_generation(self, number: int, *, reread: bool) -> Generation:
        return start_generation(
            number, self.cfg, self.board, method=self._spawn_method(number), reread=reread,
            cli=self.cli_overrides, fork=self._fork_worker,
            # With --preload the app (and its code) stays the master's: nothing to check.
            check_code=self.app is None,
        )

    def _spawn_method(self, number: int) -> str:
        """How generation `number` starts its workers: "fork", "zygote" or "exec".

        Forking shares the master's imported Django with every worker (less memory, a boot
        in milliseconds), and this process holds the code and settings as they were on disk
        at start. After a HUP only a fresh interpreter sees the new code, and gevent must
        patch the standard library before Django is imported, which a fork of this process
        cannot do: those workers come from a zygote (a fresh interpreter that imports Django
        once and forks them), or are exec'd one by one where no zygote can be had. With
        --preload the app lives here and is always forked (and, as with gunicorn, a HUP does
        not reload its code).
        """
        if self.app is not None:
            return "fork"
        if number == 0 and self.share_master and self.cfg.worker_class != "gevent":
            return "fork"
        return "zygote" if self.subreaper else "exec"

    def _all_generations(self) -> list[Generation]:
        return [*self.generations.values(), *self.stopped_generations]

    def _dispatch(self, generation: Generation, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, WorkerStarted):
                self._on_worker_started(generation, event)
            elif isinstance(event, GenerationReady):
                self._on_generation_ready(generation)
            elif isinstance(event, GenerationFailed):
                self._on_generation_failed(generation, event.reason)
            elif isinstance(event, WatchListReported):
                self._watch(event.watch_list)

    def _watch(self, watch_list: WatchList) -> None:
        """Add a generation's files to the watched ones (kept: a failed attempt's too)."""
        if self.devreload is None:
            try:
                self.devreload = DevReloader(self.cfg.reload_engine)
            except InotifyUnavailable as exc:  # checked at start-up; only if it changed since
                log.error("--reload-engine inotify: %s; polling instead", exc)
                self.devreload = DevReloader("poll")
        self.devreload.adopt(watch_list)

    def _on_worker_started(self, generation: Generation, event: WorkerStarted) -> None:
        record = WorkerRecord(event.pid, event.age, event.generation, event.heartbeat)
        self.workers[event.pid] = record
        log.info("Booting worker with pid: %s", event.pid)
        if generation in self.stopped_generations:
            self._retire(record)  # its generation was stopped while this fork was on its way
        status = self._unclaimed_exits.pop(event.pid, None)
        if status is not None:
            del self.workers[event.pid]
            self._worker_exited(record, status)

    def _on_generation_ready(self, generation: Generation) -> None:
        if generation.number == self.pending:
            self._begin_rollout(generation)
        elif generation in self.generations.values():
            generation.use_listeners(self.listeners)
            if generation.method == "zygote":
                log.info("Zygote (pid:%s) of generation %s is ready", getattr(
                    generation, "pid", "?"), generation.number)

    def _on_generation_failed(self, generation: Generation, reason: str) -> None:
        number = generation.number
        if generation in self.stopped_generations or self.stopping:
            return
        if number == self.pending:
            self._abort_reload(reason)
        elif number == self.generation:
            if not self.generation_booted and self.rollout is None:
                raise HaltServer(f"Worker failed to boot: {reason}", WORKER_BOOT_ERROR)
            if not self.generation_booted:
                self._roll_back(f"generation {number} lost its zygote: {reason}")
                return
            log.error("Generation %s cannot start workers: %s", number, reason)
            # Started again at once after serving; after a failed start, with a back-off.
            delay = 0.0 if generation.was_ready else RESTART_BACKOFF
            self._restart_at = time.monotonic() + delay
        else:
            log.warning("Generation %s, being replaced, cannot start workers: %s",
                        number, reason)

    def _restart_generation(self) -> None:
        """The current generation's zygote died: start it again, when _restart_at says."""
        if self._restart_at is None or time.monotonic() < self._restart_at or self.stopping:
            return
        self._restart_at = None
        self._drop_generation(self.generation)
        self.generations[self.generation] = self._start_generation(self.generation, reread=False)
        log.info("Starting generation %s's zygote again", self.generation)

    def _begin_rollout(self, generation: Generation) -> None:
        """The new generation is ready: switch to its settings and start replacing workers."""
        from django_prefork.logging import LoggingSetupError

        new_cfg = generation.cfg
        listeners, added, removed = self.listeners, [], []
        if new_cfg.bind != self.cfg.bind:
            try:
                change = reconcile_listeners(
                    self.listeners, [parse_bind(b) for b in new_cfg.bind], new_cfg.backlog,
                    new_cfg.umask, reuse_port=new_cfg.reuse_port)
            except (BindError, ValueError) as exc:
                self._abort_reload(str(exc))
                return
            listeners, added, removed = change.listeners, change.added, change.removed
        try:
            self._configure_logging(new_cfg)
        except LoggingSetupError as exc:
            for listener in added:
                listener.close()
            self._abort_reload(str(exc))
            return
        if self.rollout is not None:
            # A HUP during a reload: the one before is the state to go back to now.
            for listener in self.rollout.removed:
                listener.close()
            for number in [n for n in self.generations if n < self.generation]:
                self._drop_generation(number)
        self.rollout = Rollout(self.generation, self.cfg, self.listeners, added, removed)
        generation.use_listeners(listeners)
        self.listeners = listeners
        for listener in added:
            log.info("Listening at: %s (%s)", listener.url(), self.pid)
        self.cfg = new_cfg
        self.num_workers = new_cfg.workers
        self.generation = generation.number
        self.generation_booted = False
        self.pending = None
        self._restart_at = None  # a restart pending was for the generation now replaced
        self._boot_failures, self._starts_held_until = 0, 0.0  # so was a hold on starts
        log.info("Reloading: generation %s is ready; replacing the workers %s at a time",
                 generation.number, new_cfg.reload_batch)

    def _abort_reload(self, reason: str) -> None:
        log.error("Reload aborted, the previous workers keep serving: %s", reason)
        if self.pending is not None:
            self._drop_generation(self.pending)
            self.pending = None

    def _roll_back(self, reason: str) -> None:
        """The new generation's first worker could not boot: the previous one serves on."""
        from django_prefork.logging import LoggingSetupError

        rollout = self.rollout
        assert rollout is not None
        self.rollout = None
        failed = self.generation
        log.error("Reload aborted, the previous workers keep serving: %s", reason)
        for record in self._workers_of(failed):
            self._retire(record)
        self._drop_generation(failed)
        for listener in rollout.added:
            listener.close()
        self.listeners = rollout.previous_listeners
        self.cfg = rollout.previous_cfg
        self.num_workers = self.cfg.workers
        self.generation = rollout.previous_generation
        self.generation_booted = True
        restored = self.generations.get(self.generation)
        # Its zygote may have died meanwhile: then start it again.
        self._restart_at = None if restored and restored.state == READY else time.monotonic()
        with contextlib.suppress(LoggingSetupError):
            self._configure_logging(self.cfg)

    def _drop_older_generations(self) -> None:
        """A new worker serves, so there is no going back: the old zygotes may go (their
        workers keep the pages they share). Until they have exited no further new worker
        starts (_start_missing_workers), so a reload's peak memory is the old tree, the new
        zygote and one new worker (docs/architecture.md, "Memory model")."""
        older = [n for n in self.generations if n < self.generation]
        for number in older:
            self._drop_generation(number)
        if older:
            self._older_dropped_at = time.monotonic()

    def _old_zygotes_leaving(self) -> bool:
        """An older generation's zygote was told to go and has not been reaped yet (held at
        most OLD_ZYGOTE_GRACE: one that does not exit must not stall the reload)."""
        if time.monotonic() - self._older_dropped_at > OLD_ZYGOTE_GRACE:
            return False
        return any(g.number < self.generation and not g.settled
                   for g in self.stopped_generations)

    def _drop_generation(self, number: int) -> None:
        generation = self.generations.pop(number, None)
        if generation is None:
            return
        generation.stop()
        if not generation.settled:
            self.stopped_generations.append(generation)

    def _start_missing_workers(self, generation: Generation, current: list[WorkerRecord],
                               older: list[WorkerRecord]) -> None:
        if time.monotonic() < self._starts_held_until:
            return  # _hold_back_starts
        starting = sum(1 for r in current if not r.ready) + generation.pending_workers
        if not self.generation_booted:
            # One worker until one has booted: a broken project then prints its import
            # error once instead of once per worker, and a reload rolls back cheaply.
            room = 1 - starting
        elif older:
            room = self.cfg.reload_batch - starting
            if self._old_zygotes_leaving():
                room = 0  # an old zygote is still on its way out: its memory goes first
        else:
            room = self.num_workers
        missing = self.num_workers - len(current) - generation.pending_workers
        for _ in range(min(missing, room)):
            if self.generation != generation.number:
                break  # a failed boot rolled back to the previous generation
            self.spawn_worker(generation)

    # -- workers ---------------------------------------------------------------------------
    def _fork_worker(self, age: int, heartbeat: Heartbeat, cfg: Config) -> int:
        """Fork a worker that starts from this process's memory (copy-on-write)."""
        freeze_before_fork()
        pid = os.fork()
        if pid != 0:
            return pid
        # Child: from here on we are a worker and must never return into the master's loop.
        os._exit(self._run_forked_worker(age, heartbeat, cfg))

    def _run_forked_worker(self, age: int, heartbeat: Heartbeat, cfg: Config) -> int:
        from django_prefork.workers.base import run_worker_in_child

        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.stray_signals.restore()
        self.observer.close_in_child()
        os.close(self._pipe_r)
        os.close(self._pipe_w)
        for record in self.workers.values():
            record.heartbeat.close()
        for generation in self._all_generations():
            generation.close_in_child()
        return run_worker_in_child(cfg=cfg, listeners=self.listeners, heartbeat=heartbeat,
                                   age=age, ppid=self.pid, app=self.app, board=self.board)

    def _worker_exited(self, record: WorkerRecord, status: int) -> None:
        record.heartbeat.close()
        self.board.forget(record.pid)
        self._log_exit(record, status)
        self.call_hook("child_exit", HookWorker(self.cfg, record.age, record.pid, self.pid))
        code = os.waitstatus_to_exitcode(status)
        self.observer.worker_exited(
            record.pid, None if self.stopping else exit_reason(record, self.generation, code))
        if code == WORKER_BOOT_ERROR and not record.ready:
            self._on_boot_failure(record.generation)

    def _on_boot_failure(self, generation: int) -> None:
        if generation != self.generation:
            return
        if self.generation_booted:
            self._hold_back_starts(generation)
            return
        if self.rollout is None:
            raise HaltServer("Worker failed to boot.", WORKER_BOOT_ERROR)
        self._roll_back(f"a worker of generation {generation} failed to boot "
                        f"(exit code {WORKER_BOOT_ERROR}; its error is logged above)")

    def _hold_back_starts(self, generation: int) -> None:
        """A worker of a generation that serves failed to boot (its post_fork hook, loading
        the app, the warm-up request): the others serve on, and the next start waits, longer
        after each failure in a row, until a worker boots again. Without the wait a cause
        that lasts (a database the warm-up needs, down) restarted workers as fast as they
        failed, 70 a second, each with its traceback."""
        self._boot_failures += 1
        self._last_boot_failure = time.monotonic()
        delay = min(BOOT_RETRY_MAX, BOOT_RETRY_FIRST * 2 ** min(self._boot_failures - 1, 16))
        self._starts_held_until = self._last_boot_failure + delay
        log.error("A worker of generation %s failed to boot (its error is logged above); "
                  "the next start in %.0f s", generation, delay)

    def _current_workers(self) -> list[WorkerRecord]:
        return [r for r in self.workers.values()
                if r.generation == self.generation and not r.retiring]

    def _refresh_readiness(self) -> None:
        for record in self.workers.values():
            if not record.ready and record.heartbeat.is_ready():
                record.ready = True
            if record.ready and record.generation == self.generation:
                self.generation_booted = True
                if self._boot_failures and record.started_at > self._last_boot_failure:
                    self._boot_failures = 0  # one booted again: the next failure waits 1 s

    def _workers_of(self, generation: int) -> list[WorkerRecord]:
        return [r for r in self.workers.values() if r.generation == generation]

    def _retire(self, record: WorkerRecord) -> None:
        record.retiring = True
        self._kill(record.pid, signal.SIGTERM)

    def _abort(self, record: WorkerRecord) -> None:
        record.aborted_at = time.monotonic()
        self._kill(record.pid, signal.SIGABRT)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _log_exit(self, record: WorkerRecord, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            log.debug("Worker (pid:%s) exited", record.pid)  # it logged its own exit
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            # TERM is how the master stops a worker: not an error (as gunicorn).
            level = logging.INFO if -code == signal.SIGTERM else logging.ERROR
            log.log(level, "Worker (pid:%s) was sent %s!", record.pid, name)
        else:
            log.error("Worker (pid:%s) exited with code %s", record.pid, code)

    def _configure_logging(self, cfg: Config) -> None:
        from django_prefork.logging import configure_logging

        configure_logging(cfg)


class StopServer(Exception):
    def __init__(self, graceful: bool) -> None:
        super().__init__("graceful" if graceful else "quick")
        self.graceful = graceful
