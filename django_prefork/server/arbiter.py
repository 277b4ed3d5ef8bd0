"""The master process: spawns workers, watches them, and answers signals. It never serves.

The loop is a handful of named steps run once per wake-up:

    wait for a signal or a tick → handle queued signals → reap dead workers
    → kill hung workers → keep the worker count → retire the old generation after a reload

Signal handlers only queue the signal number and write to a self-pipe, so all the work above
happens in ordinary code, never inside a handler.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django_prefork.conf import Config, ConfigError, parse_bind
from django_prefork.logging import LoggingSetupError
from django_prefork.metrics.master import MasterObserver, exit_reason
from django_prefork.server.control import ControlServer, ControlSocketError, open_control_server
from django_prefork.server.notify import Notifier
from django_prefork.server.pidfile import Pidfile
from django_prefork.server.signals import StraySignals, in_terminal_foreground
from django_prefork.server.sockets import BindError, Listener, create_listeners
from django_prefork.server.spawn import spawn_interpreter
from django_prefork.server.upgrade import BinaryUpgrade
from django_prefork.server.zygote import Zygote, ZygoteError, become_subreaper
from django_prefork.workers.base import WORKER_BOOT_ERROR, freeze_before_fork, set_process_title
from django_prefork.workers.boot import ENV_VAR as WORKER_ENV_VAR
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.loadboard import LoadBoard

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
# A worker still importing the project is not "hung" until this long, whatever the timeout.
MIN_BOOT_TIMEOUT = 30.0
# After SIGABRT a hung worker gets this long to log its stack before SIGKILL.
ABORT_GRACE = 2.0
# Upper bound on re-reading settings in a fresh interpreter on HUP.
REREAD_TIMEOUT = 60.0


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


class Arbiter:
    """Supervises the workers for one runprefork invocation."""

    def __init__(
        self,
        cfg: Config,
        listeners: list[Listener],
        *,
        cli_overrides: dict[str, Any] | None = None,
        app: Any = None,
        metrics_listener: Listener | None = None,
    ) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.cli_overrides = cli_overrides or {}
        self.app = app  # set with --preload: workers are forked with the app already loaded
        self.pid = os.getpid()
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0
        self.generation_booted = False  # a worker of the current generation became ready
        self.worker_age = 0
        self.num_workers = cfg.workers
        self.signal_queue: list[int] = []
        self.stopping = False
        self.pidfile: Pidfile | None = None
        self._cfg_before_reload: Config | None = None
        self.zygotes: dict[int, Zygote] = {}
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
        self._pipe_r, self._pipe_w = os.pipe()
        for fd in (self._pipe_r, self._pipe_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    # -- public ----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; return the process exit status."""
        self.start()
        try:
            self.open_control_socket()
            while True:
                self.wait_for_wakeup(self._tick())
                self.handle_signals()
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
        # DJANGO_PREFORK_NO_ZYGOTE=1 takes the exec path that platforms without a child
        # subreaper use (each worker its own fresh interpreter): for tests and debugging.
        self.subreaper = not os.environ.get("DJANGO_PREFORK_NO_ZYGOTE") and become_subreaper()
        log.info("Starting django-prefork master (pid: %s)", self.pid)

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
        # Poll quickly while workers boot, so the rest of a generation (and the retirement
        # of the old one on reload) follows the first ready worker without delay.
        if any(not r.ready for r in self.workers.values()):
            return 0.05
        return 1.0

    def wait_for_wakeup(self, timeout: float) -> None:
        if self.signal_queue:
            return
        try:
            ready = self.observer.select([self._pipe_r], timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            return
        if ready:
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
            name = signal.Signals(signum).name
            log.info("Handling signal: %s", name[3:].lower())
            if signum == signal.SIGTERM:
                raise StopServer(graceful=True)
            if signum in (signal.SIGINT, signal.SIGQUIT):
                raise StopServer(graceful=False)
            if signum == signal.SIGHUP:
                self.notifier.reload_started()
                self.reload()
            elif signum == signal.SIGTTIN:
                self.num_workers += 1
            elif signum == signal.SIGTTOU:
                # Never below one, as gunicorn; at zero (after WINCH) TTOU changes nothing.
                if self.num_workers > 1:
                    self.num_workers -= 1
            elif signum == signal.SIGUSR1:
                self.reopen_logs()
            elif signum == signal.SIGUSR2:
                self.handle_usr2()
            elif signum == signal.SIGWINCH:
                self.handle_winch()

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
            if record is None:
                self._forget_zygote(pid, status)
                continue
            record.heartbeat.close()
            self.board.forget(pid)
            self._log_exit(record, status)
            code = os.waitstatus_to_exitcode(status)
            self.observer.worker_exited(
                pid, None if self.stopping else exit_reason(record, self.generation, code))
            if code == WORKER_BOOT_ERROR and not record.ready:
                self._on_boot_failure(record.generation)

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
                if record.ready and record.generation == self.generation:
                    self.generation_booted = True
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
        """Keep exactly num_workers serving workers of the current generation."""
        self._refresh_readiness()
        current = self._current_workers()
        if len(current) < self.num_workers:
            # Until one worker of this generation has booted, start only one: a broken
            # project then prints its import error once instead of once per worker.
            missing = self.num_workers - len(current)
            if not self.generation_booted:
                missing = 0 if current else 1
            generation = self.generation
            for _ in range(missing):
                if self.generation != generation:
                    break  # a failed boot rolled back to the previous generation
                self.spawn_worker()
        elif len(current) > self.num_workers:
            excess = sorted(current, key=lambda r: r.age)[: len(current) - self.num_workers]
            for record in excess:
                self._retire(record)

    def finish_reload(self) -> None:
        """After a HUP: once the new generation is fully up, retire the old workers."""
        self._stop_unused_zygotes()
        old = [r for r in self.workers.values()
               if r.generation < self.generation and not r.retiring]
        if not old:
            return
        current = self._current_workers()
        if len(current) >= self.num_workers and all(r.ready for r in current):
            for record in old:
                self._retire(record)

    # -- actions ---------------------------------------------------------------------------
    def spawn_worker(self) -> None:
        self.worker_age += 1
        heartbeat = Heartbeat()
        method = self._spawn_method()
        if method == "fork":
            pid = self._fork_worker(heartbeat)
        elif method == "zygote":
            try:
                pid = self._zygote().fork_worker(self.worker_age, heartbeat)
            except ZygoteError as exc:
                heartbeat.close()
                log.error("Worker failed to boot: %s", exc)
                self._on_boot_failure(self.generation)
                return
        else:
            pid = self._exec_worker(heartbeat)
        self.workers[pid] = WorkerRecord(pid, self.worker_age, self.generation, heartbeat)
        log.info("Booting worker with pid: %s", pid)

    def _spawn_method(self) -> str:
        """How the next worker starts: "fork" (of this process), "zygote" or "exec".

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
        if self.generation == 0 and self.cfg.worker_class != "gevent":
            return "fork"
        return "zygote" if self.subreaper else "exec"

    def _zygote(self) -> Zygote:
        """The current generation's zygote, started (and waited for) on first use."""
        zygote = self.zygotes.get(self.generation)
        if zygote is None:
            zygote = Zygote(self.cfg, self.listeners, self.generation, self.board)
            self.zygotes[self.generation] = zygote
            log.info("Booting zygote with pid: %s", zygote.pid)
            zygote.wait_ready()
        return zygote

    def _stop_unused_zygotes(self) -> None:
        for generation, zygote in list(self.zygotes.items()):
            if generation != self.generation and not self._workers_of(generation):
                zygote.stop()
                del self.zygotes[generation]

    def _exec_worker(self, heartbeat: Heartbeat) -> int:
        """Start a worker as a fresh interpreter that inherits the sockets."""
        fds = [listener.fileno() for listener in self.listeners]
        spec = {
            "cfg": self.cfg.to_dict(),
            "age": self.worker_age,
            "ppid": self.pid,
            "listener_fds": fds,
            "listener_specs": [listener.spec for listener in self.listeners],
            "heartbeat_fd": heartbeat.fd,
            "board_fd": self.board.fd,
            "sys_path": sys.path,
        }
        return spawn_interpreter("django_prefork.workers.boot", WORKER_ENV_VAR, spec,
                                 [*fds, heartbeat.fd, self.board.fd])

    def _fork_worker(self, heartbeat: Heartbeat) -> int:
        """Fork a worker that starts from this process's memory (copy-on-write)."""
        age = self.worker_age
        freeze_before_fork()
        pid = os.fork()
        if pid != 0:
            return pid
        # Child: from here on we are a worker and must never return into the master's loop.
        os._exit(self._run_forked_worker(age, heartbeat))

    def _run_forked_worker(self, age: int, heartbeat: Heartbeat) -> int:
        from django_prefork.workers.base import run_worker_in_child

        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.stray_signals.restore()
        os.close(self._pipe_r)
        os.close(self._pipe_w)
        for record in self.workers.values():
            record.heartbeat.close()
        for zygote in self.zygotes.values():
            zygote.close_control()
        self.observer.close_in_child()
        return run_worker_in_child(cfg=self.cfg, listeners=self.listeners, heartbeat=heartbeat,
                                   age=age, ppid=self.pid, app=self.app, board=self.board)

    def reload(self) -> None:
        """HUP: re-read settings in a fresh interpreter, then start a new generation."""
        try:
            new_cfg = self._reread_config()
        except ConfigError as exc:
            log.error("Reload aborted, keeping the running configuration: %s", exc)
            return
        try:  # opens the new log files first; on failure the old handlers stay in place
            self._configure_logging(new_cfg)
        except LoggingSetupError as exc:
            log.error("Reload aborted, keeping the running configuration and logs: %s", exc)
            return
        if new_cfg.bind != self.cfg.bind:
            try:
                listeners = create_listeners([parse_bind(b) for b in new_cfg.bind],
                                             new_cfg.backlog, umask=new_cfg.umask)
            except BindError as exc:
                log.error("Reload aborted, keeping the running configuration: %s", exc)
                return
            for old in self.listeners:
                old.close()
            self.listeners = listeners
            for listener in listeners:
                log.info("Listening at: %s (%s)", listener.url(), self.pid)
        self._cfg_before_reload = self.cfg
        self.cfg = new_cfg
        self.num_workers = new_cfg.workers
        self.generation += 1
        self.generation_booted = False
        log.info("Reloading: starting generation %s", self.generation)

    # -- binary upgrade, WINCH, sd_notify (logic in upgrade.py, signals.py, notify.py) ---------
    def handle_usr2(self) -> None:
        """USR2: start a new master on our sockets (server/upgrade.py); we keep serving."""
        self.upgrade.start(self.cfg, self.listeners)

    def handle_winch(self) -> None:
        """WINCH: stop every worker gracefully, keep the master; HUP or TTIN starts workers."""
        if in_terminal_foreground():
            # gunicorn acts on WINCH only when daemonized: in a terminal, a resize sends it.
            log.info("WINCH ignored: the master runs in the foreground of a terminal, whose "
                     "window resizes send it")
            return
        log.info("Stopping all workers gracefully (WINCH); HUP or TTIN starts them again")
        self.num_workers = 0
        for record in list(self.workers.values()):
            if not record.retiring:
                self._retire(record)

    def report_state(self) -> None:
        """Once per loop turn: the upgrade's pidfile takeover, and READY=1 for systemd."""
        self.upgrade.tick(self.cfg, self.pidfile, self.listeners, self.cfg.pidfile)
        old_serving = any(r.generation < self.generation and not r.retiring
                          for r in self.workers.values())
        if self.generation_booted and not old_serving:
            self.upgrade.serving(self.pidfile)
            plural = "s" if self.num_workers != 1 else ""
            self.notifier.serving(f"Serving with {self.num_workers} worker{plural}")

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
        for zygote in self.zygotes.values():
            zygote.stop()
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
        self.observer.close()
        if self.pidfile is not None:
            self.pidfile.unlink()
        log.info("Shutting down: master (pid: %s)", self.pid)
        return exit_status

    def reap_workers_quietly(self) -> None:
        try:
            self.reap_workers()
        except HaltServer:
            pass

    # -- helpers ---------------------------------------------------------------------------
    def _current_workers(self) -> list[WorkerRecord]:
        return [r for r in self.workers.values()
                if r.generation == self.generation and not r.retiring]

    def _refresh_readiness(self) -> None:
        for record in self.workers.values():
            if not record.ready and record.heartbeat.is_ready():
                record.ready = True
            if record.ready and record.generation == self.generation:
                self.generation_booted = True

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

    def _forget_zygote(self, pid: int, status: int) -> None:
        for generation, zygote in list(self.zygotes.items()):
            if zygote.pid == pid:
                del self.zygotes[generation]
                zygote.stop()
                if not self.stopping:
                    code = os.waitstatus_to_exitcode(status)
                    log.warning("Zygote (pid:%s) exited with code %s", pid, code)

    def _on_boot_failure(self, generation: int) -> None:
        if generation == self.generation and not self.generation_booted:
            if self.generation == 0:
                raise HaltServer("Worker failed to boot.", WORKER_BOOT_ERROR)
            # A reload whose new code cannot boot: keep the old generation serving.
            log.error("Reload failed: the new workers could not boot; the previous workers "
                      "keep serving.")
            self.generation -= 1
            self.generation_booted = True
            for other in self._workers_of(generation):
                self._retire(other)
            failed = self.zygotes.pop(generation, None)
            if failed is not None:
                failed.stop()
            if self._cfg_before_reload is not None:
                self.cfg = self._cfg_before_reload
                self.num_workers = self.cfg.workers

    def _workers_of(self, generation: int) -> list[WorkerRecord]:
        return [r for r in self.workers.values() if r.generation == generation]

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

    def _reread_config(self) -> Config:
        """Load settings.py again in a fresh interpreter (this one has the old module)."""
        env = dict(os.environ)
        env["DJANGO_PREFORK_CLI"] = json.dumps(self.cli_overrides)
        env["DJANGO_PREFORK_SYS_PATH"] = json.dumps(sys.path)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "django_prefork.server.reread"],
                env=env, capture_output=True, text=True, timeout=REREAD_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError("re-reading the settings timed out") from None
        if proc.returncode != 0:
            lines = (proc.stderr or "").strip().splitlines() or ["unknown error"]
            raise ConfigError(lines[-1])
        return Config.from_dict(json.loads(proc.stdout))


class StopServer(Exception):
    def __init__(self, graceful: bool) -> None:
        super().__init__("graceful" if graceful else "quick")
        self.graceful = graceful
