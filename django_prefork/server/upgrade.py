"""USR2: the binary upgrade, with gunicorn's contract.

The running ("old") master starts the same command again, as a fresh process from the same
directory, handing it its listening sockets, so the new master binds nothing and both accept
from the same kernel queues: no connection is refused while the two overlap. The new master
writes PIDFILE.2 once it serves, while the old one lives; the operator waits for it (or, under
systemd, for READY=1 with MAINPID=, which moves the unit's main PID), then sends TERM (or
WINCH, then TERM) to the old one; the new master notices its parent has gone and takes
PIDFILE over. A new master that fails to boot just exits: the old master reaps it, logs one
line, and nothing else changes. Sending TERM to the new master instead rolls the upgrade
back the same way.

The new master is a child of the old one (as with gunicorn), so the old master's reaping sees
its exit; `BinaryUpgrade.reap` claims that pid before anything treats it as a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from django_prefork.hooks import HookServer, call_hook
from django_prefork.server.notify import Notifier
from django_prefork.server.pidfile import Pidfile, PidfileError
from django_prefork.server.sockets import INHERIT_ENV_VAR, Listener, inheritance_spec

log = logging.getLogger("django_prefork.error")

# Set by the old master in the new master's environment: the old master's pid.
OLD_MASTER_ENV_VAR = "DJANGO_PREFORK_OLD_MASTER"
#: The old master's metrics socket, handed to the new master (metrics/master.py adopts it).
METRICS_INHERIT_ENV_VAR = "DJANGO_PREFORK_INHERIT_METRICS_FD"
# The new master's pidfile while the old master lives (gunicorn's name).
NEW_PIDFILE_SUFFIX = ".2"


#: Where the operator started the server, recorded before `chdir` moves the process.
_operator_directory: str | None = None


def remember_start_directory(directory: str | None = None) -> None:
    """Record the directory a USR2 must start the new master from (before any `chdir`)."""
    global _operator_directory
    if _operator_directory is None:
        _operator_directory = directory or start_directory()


def start_directory() -> str:
    """The directory to start the new master from, symlinks kept.

    $PWD when it is the current directory by another name: a deployment that switches a
    `current` symlink to a new release then upgrades into the new release (gunicorn does the
    same).
    """
    if _operator_directory is not None:
        return _operator_directory
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    if pwd:
        with contextlib.suppress(OSError):
            if os.path.samefile(pwd, cwd):
                return pwd
    return cwd


#: The operator's command line, when this process is no longer running it as such: the lean
#: master (server/master.py) is an execve of `python -m django_prefork.server.master`.
_operator_command: list[str] | None = None


def set_start_command(argv: list[str]) -> None:
    """Record the command line (interpreter options included) a USR2 must run again."""
    global _operator_command
    _operator_command = list(argv)


def start_command() -> list[str]:
    """This process's command line (interpreter options and `-m` included)."""
    argv = _operator_command or list(getattr(sys, "orig_argv", None)
                                     or [sys.executable, *sys.argv])
    return [sys.executable, *argv[1:]]


def old_master_pid() -> int | None:
    """The old master this process is the new master of (USR2), read without consuming it."""
    return _parse_old_master(os.environ.get(OLD_MASTER_ENV_VAR))


def _old_master_from_environ() -> int | None:
    return _parse_old_master(os.environ.pop(OLD_MASTER_ENV_VAR, None))


def _parse_old_master(value: str | None) -> int | None:
    if not value:
        return None
    try:
        pid = int(value)
    except ValueError:
        return None
    # Only our parent can be the old master; anything else is a stale variable.
    return pid if pid == os.getppid() else None


def _set_title(role: str, cfg: Any) -> None:
    from django_prefork.workers.process import set_process_title

    set_process_title(role, cfg)


class BinaryUpgrade:
    """Both sides of a USR2 upgrade, as seen from one master.

    In the old master: `start` on USR2, `reap` when the new master exits (failed boot or
    rollback). In the new master: `pidfile_path` at start, `tick` once per loop turn until the
    old master has gone.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.command = start_command()
        self.directory = start_directory()
        self.new_master_pid: int | None = None  # we are the old master of this one
        self.old_master_pid: int | None = _old_master_from_environ()  # we are the new master
        self._owned_paths: list[Listener] = []
        self._pidfile_failed = False

    @property
    def handed_over(self) -> bool:
        """A new master serves the same sockets: this one's stop is not the service's stop."""
        return self.new_master_pid is not None

    @property
    def is_new_master(self) -> bool:
        """The old master still lives (we are its child)."""
        return self.old_master_pid is not None

    def role(self) -> str:
        if self.new_master_pid is not None:
            return "master [old]"
        if self.old_master_pid is not None:
            return "master [new]"
        return "master"

    def pidfile_path(self, path: str) -> str:
        return path + NEW_PIDFILE_SUFFIX if self.is_new_master else path

    # -- in the old master -----------------------------------------------------------------
    def start(self, cfg: Any, listeners: list[Listener], metrics_fd: int | None = None) -> None:
        """USR2: start the new master with our listening sockets (and the metrics one: the
        new master cannot bind the port we hold)."""
        if self.new_master_pid is not None:
            log.warning("USR2 ignored: a new master (pid: %s) is already running",
                        self.new_master_pid)
            return
        if self.old_master_pid is not None:
            log.warning("USR2 ignored: the old master (pid: %s) is still running; TERM it "
                        "first", self.old_master_pid)
            return
        env = dict(os.environ)
        env[INHERIT_ENV_VAR] = inheritance_spec(listeners)
        env[OLD_MASTER_ENV_VAR] = str(os.getpid())
        fds = [listener.fileno() for listener in listeners]
        if metrics_fd is not None:
            env[METRICS_INHERIT_ENV_VAR] = str(metrics_fd)
            fds.append(metrics_fd)
        try:
            pid = self._fork_exec(env, fds, cfg)
        except OSError as exc:
            log.error("Upgrade failed: could not start a new master: %s; this master keeps "
                      "serving", exc)
            return
        self.new_master_pid = pid
        # The new master serves these socket files now: our stop must not remove them.
        self._owned_paths = [listener for listener in listeners if listener.owns_path]
        for listener in self._owned_paths:
            listener.owns_path = False
        _set_title(self.role(), cfg)
        log.info("Upgrade: started a new master (pid: %s); this master (pid: %s) is now the "
                 "old master and keeps serving until it is sent TERM", pid, os.getpid())

    def _fork_exec(self, env: dict[str, str], fds: list[int], cfg: Any = None) -> int:
        # fork + execve, not subprocess: the master reaps every child with waitpid(-1),
        # which a Popen object would race with (as in server/spawn.py).
        master_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child until exec
            try:
                if cfg is not None:
                    # gunicorn calls pre_exec here: in the forked child, just before the exec.
                    call_hook(cfg.hooks, "pre_exec", HookServer(cfg, master_pid))
                for fd in fds:
                    os.set_inheritable(fd, True)
                os.chdir(self.directory)
                os.execve(self.command[0], self.command, env)
            finally:
                os._exit(127)
        return pid

    def reap(self, pid: int, status: int, cfg: Any) -> bool:
        """Claim the exit of our new master (True); any other pid is not ours (False)."""
        if pid != self.new_master_pid:
            return False
        self.new_master_pid = None
        for listener in self._owned_paths:
            listener.owns_path = True
        self._owned_paths = []
        _set_title(self.role(), cfg)
        # Should the new master have told systemd it was the main process, we are again.
        self.notifier.send(f"MAINPID={os.getpid()}",
                           "STATUS=Serving; the upgrade did not complete")
        code = os.waitstatus_to_exitcode(status)
        if code == 0:  # the operator stopped it: a rollback
            log.info("Upgrade rolled back: the new master (pid: %s) has stopped; this master "
                     "(pid: %s) serves alone again", pid, os.getpid())
        else:
            log.error("Upgrade abandoned: the new master (pid: %s) exited with %s; this master "
                      "(pid: %s) keeps serving", pid,
                      f"code {code}" if code > 0 else f"signal {-code}", os.getpid())
        return True

    def notify_stop(self) -> None:
        """What systemd hears when this master stops.

        The old master of a running upgrade is no longer the service: its stop is silent. A
        new master stopped while the old one lives (a rollback) hands MAINPID back. Any other
        master's stop is the service's: STOPPING=1.
        """
        if self.new_master_pid is not None:
            return
        if self.old_master_pid is not None:
            self.notifier.send(f"MAINPID={self.old_master_pid}", "STATUS=Upgrade rolled back")
            return
        self.notifier.stopping()

    # -- in the new master -----------------------------------------------------------------
    def serving(self, pidfile: Pidfile | None) -> None:
        """Our first generation serves: write PIDFILE.2 (or PIDFILE if the old one has gone).

        Written only now, not at start, so that PIDFILE.2 existing means "the new master
        serves": a runbook can wait for it and then TERM the old master, and a new master
        whose workers cannot boot never produces it.
        """
        if pidfile is None or pidfile.pid is not None or self._pidfile_failed:
            return
        try:
            pidfile.create(os.getpid())
        except (OSError, PidfileError) as exc:
            self._pidfile_failed = True  # said once; serving matters more than the file
            log.error("Could not write the pidfile %s: %s", pidfile.path, exc)

    def tick(self, cfg: Any, pidfile: Pidfile | None, listeners: list[Listener],
             main_path: str | None) -> None:
        """Once the old master has gone: take PIDFILE over and own the socket files."""
        if self.old_master_pid is None or os.getppid() == self.old_master_pid:
            return
        old = self.old_master_pid
        self.old_master_pid = None
        if pidfile is not None and main_path:
            try:
                pidfile.rename(main_path)
            except OSError as exc:
                log.error("Could not move the pidfile to %s: %s", main_path, exc)
        for listener in listeners:
            if listener.spec.startswith("unix:"):
                listener.owns_path = True  # bound by a master of ours: remove it at our stop
        _set_title(self.role(), cfg)
        log.info("The old master (pid: %s) has gone: this master (pid: %s) carries on alone",
                 old, os.getpid())
