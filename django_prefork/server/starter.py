"""One contract for starting workers, whichever process makes them.

A `Generation` is the code and settings a set of workers runs, and the way they are started:

- "fork": forked from the master itself (the first generation, which shares the master's
  imported Django; and always with --preload, whose app lives in the master);
- "zygote": forked by a fresh interpreter that read the generation's settings and code once
  (`workers/zygote.py`);
- "exec": each worker a fresh interpreter of its own (no child subreaper: not Linux).

The master drives every kind the same way and never waits on one:

    gen = start_generation(...)        # returns at once; the generation boots meanwhile
    select([*gen.fds(), ...], tick)    # readable when it has something to report
    for event in gen.poll(): ...       # GenerationReady(cfg) | GenerationFailed(reason)
                                       # | WorkerStarted(age, pid, heartbeat)
                                       # | WatchListReported(watch_list) with --reload
    gen.use_listeners(listeners)       # once ready: the sockets its workers serve
    gen.start_worker(age, heartbeat)   # reported by a WorkerStarted event (maybe later)
    gen.child_exited(pid, status)      # the master reaped a process: was it ours?
    gen.stop()

A generation started by a HUP re-reads the settings in a fresh interpreter (the zygote, or a
one-shot "probe" zygote for fork and exec), loads the URLconf there, and reports the new
config with GenerationReady, or one line saying why it cannot start with GenerationFailed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_prefork.conf import Config
from django_prefork.server.devreload import WatchList
from django_prefork.server.sockets import Listener
from django_prefork.server.spawn import spawn_interpreter
from django_prefork.server.zygote import ZygoteProcess
from django_prefork.workers.boot import ENV_VAR as WORKER_ENV_VAR
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.loadboard import LoadBoard

#: Longest a generation may take to read its settings and import the project.
BOOT_TIMEOUT = 120.0
#: Longest a zygote that reads fork requests may take to report a worker it was asked to
#: fork (forking takes milliseconds): past it the zygote is taken for hung and killed, and
#: started again. Counted from the request, or from the zygote's "S" if that came later.
FORK_REPORT_TIMEOUT = 10.0

BOOTING = "booting"
READY = "ready"
FAILED = "failed"


@dataclass
class GenerationReady:
    generation: int
    cfg: Config


@dataclass
class GenerationFailed:
    generation: int
    reason: str


@dataclass
class WorkerStarted:
    generation: int
    age: int
    pid: int
    heartbeat: Heartbeat


@dataclass
class WatchListReported:
    """--reload: files the generation's interpreter runs (server/devreload.py watches them)."""

    generation: int
    watch_list: WatchList


Event = GenerationReady | GenerationFailed | WorkerStarted | WatchListReported
#: Forks a worker of the master: (age, heartbeat, cfg) -> pid; the arbiter supplies it, as the
#: child must let go of the master's own descriptors.
ForkFunction = Callable[[int, Heartbeat, Config], int]


class Generation:
    """One generation of workers and how they start; subclasses say how a worker starts."""

    method = ""

    def __init__(self, number: int, cfg: Config, board: LoadBoard, *,
                 boot: ZygoteProcess | None) -> None:
        self.number = number
        self.cfg = cfg
        self.board = board
        self.listeners: list[Listener] = []
        self.state = BOOTING
        self.was_ready = False
        self.started_at = time.monotonic()
        self._boot = boot
        self._events: list[Event] = []
        if boot is None:
            self._ready(cfg)

    # -- the contract ------------------------------------------------------------------------
    def fds(self) -> list[int]:
        """Descriptors the master's select should watch for this generation."""
        if self._boot is not None and not (self._boot.exited or self._boot.eof):
            return [self._boot.fileno()]
        return []

    def poll(self) -> list[Event]:
        """What happened since the last call; never blocks."""
        self.poll_boot_messages()
        if self.state == BOOTING and time.monotonic() - self.started_at > BOOT_TIMEOUT:
            self._failed(f"it did not get ready within {BOOT_TIMEOUT:.0f} s")
            self.stop()
        events, self._events = self._events, []
        return events

    def use_listeners(self, listeners: list[Listener]) -> None:
        self.listeners = list(listeners)

    def start_worker(self, age: int, heartbeat: Heartbeat) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def pending_workers(self) -> int:
        """Workers asked for and not yet reported by WorkerStarted."""
        return 0

    @property
    def settled(self) -> bool:
        """Nothing more to report: no zygote or probe still running, no fork on its way."""
        return (self._boot is None or self._boot.exited) and not self.pending_workers

    def child_exited(self, pid: int, status: int) -> bool:
        """The master reaped pid: True if it was this generation's zygote or probe."""
        if self._boot is None or pid != self._boot.pid:
            return False
        self.poll_boot_messages()
        self._boot.exited = True
        self._boot.close_control()
        if self.state == BOOTING:
            code = os.waitstatus_to_exitcode(status)
            self._failed(f"its interpreter exited with code {code} before it was ready")
        return True

    def stop(self) -> None:
        if self._boot is not None:
            self._boot.stop()

    def close_in_child(self) -> None:
        """In a worker forked by the master: drop the master's end of our control socket."""
        if self._boot is not None:
            self._boot.close_control()

    # -- helpers -----------------------------------------------------------------------------
    def poll_boot_messages(self) -> None:
        if self._boot is not None and not self._boot.exited:
            for message in self._boot.receive():
                self._on_message(message)

    def _on_message(self, message: bytes) -> None:
        kind, body = message[:1], message[1:]
        if kind == b"R" and self.state == BOOTING:
            self._ready(Config.from_dict(_json(body)))
        elif kind == b"F" and self.state == BOOTING:
            self._failed(body.decode("utf-8", "replace") or "unknown error")
        elif kind == b"D":
            with contextlib.suppress(ValueError):
                self._events.append(WatchListReported(self.number,
                                                      WatchList.from_json(json.loads(body))))

    def _ready(self, cfg: Config) -> None:
        self.cfg = cfg
        self.state = READY
        self.was_ready = True
        self._events.append(GenerationReady(self.number, cfg))

    def _failed(self, reason: str) -> None:
        self.state = FAILED
        self._events.append(GenerationFailed(self.number, reason))


class ForkGeneration(Generation):
    """Workers forked from the master."""

    method = "fork"

    def __init__(self, number: int, cfg: Config, board: LoadBoard, *,
                 boot: ZygoteProcess | None, fork: ForkFunction) -> None:
        super().__init__(number, cfg, board, boot=boot)
        self._fork = fork

    def start_worker(self, age: int, heartbeat: Heartbeat) -> None:
        pid = self._fork(age, heartbeat, self.cfg)
        self._events.append(WorkerStarted(self.number, age, pid, heartbeat))


class ExecGeneration(Generation):
    """Each worker a fresh interpreter that inherits the sockets (`workers/boot.py`)."""

    method = "exec"

    def start_worker(self, age: int, heartbeat: Heartbeat) -> None:
        fds = [listener.fileno() for listener in self.listeners]
        spec = {
            "cfg": self.cfg.to_dict(),
            "age": age,
            "ppid": os.getpid(),
            "listener_fds": fds,
            "listener_specs": [listener.spec for listener in self.listeners],
            "heartbeat_fd": heartbeat.fd,
            "board_fd": self.board.fd,
            "sys_path": sys.path,
        }
        pid = spawn_interpreter("django_prefork.workers.boot", WORKER_ENV_VAR, spec,
                                [*fds, heartbeat.fd, self.board.fd])
        self._events.append(WorkerStarted(self.number, age, pid, heartbeat))


class ZygoteGeneration(Generation):
    """Workers forked by the generation's zygote, which reports each pid when it has one."""

    method = "zygote"

    def __init__(self, number: int, cfg: Config, board: LoadBoard, *,
                 boot: ZygoteProcess) -> None:
        super().__init__(number, cfg, board, boot=boot)
        self._zygote = boot
        #: age -> (heartbeat, when asked) of each fork asked for and not yet reported
        self._waiting: dict[int, tuple[Heartbeat, float]] = {}
        self._forking_since: float | None = None  # when it said it reads fork requests
        self._hung = ""  # why we killed the zygote, if we did

    @property
    def pid(self) -> int:
        return self._zygote.pid

    @property
    def pending_workers(self) -> int:
        return len(self._waiting)

    def use_listeners(self, listeners: list[Listener]) -> None:
        super().use_listeners(listeners)
        try:
            self._zygote.send_listeners(listeners)
        except OSError:
            pass  # it has gone: child_exited reports that

    def start_worker(self, age: int, heartbeat: Heartbeat) -> None:
        try:
            self._zygote.request_worker(age, heartbeat)
        except OSError:
            heartbeat.close()  # it has gone: child_exited reports that
            return
        self._waiting[age] = (heartbeat, time.monotonic())

    def poll(self) -> list[Event]:
        events = super().poll()
        self._kill_if_hung()
        return events

    def _kill_if_hung(self) -> None:
        """A zygote that leaves a fork unreported is stuck (in the fork, or in a hook run
        at it): without this the reload, or the worker count, would wait for it forever.
        Killed, it is reported by child_exited, and the master starts it again."""
        if not self._waiting or self._hung or self._zygote.exited \
                or self._forking_since is None:
            return
        oldest = min(asked for _, asked in self._waiting.values())
        waited = time.monotonic() - max(oldest, self._forking_since)
        if waited > FORK_REPORT_TIMEOUT:
            self._hung = (f"the zygote (pid:{self._zygote.pid}) did not report a worker it "
                          f"was asked to fork {waited:.0f} s ago, and was killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._zygote.pid, signal.SIGKILL)

    def child_exited(self, pid: int, status: int) -> bool:
        if pid != self._zygote.pid:
            return False
        was_ready = self.state == READY
        super().child_exited(pid, status)
        for heartbeat, _ in self._waiting.values():
            heartbeat.close()
        self._waiting.clear()
        if was_ready:
            code = os.waitstatus_to_exitcode(status)
            self._failed(self._hung or f"the zygote (pid:{pid}) exited with code {code}")
        return True

    def _on_message(self, message: bytes) -> None:
        if message[:1] == b"S":
            self._forking_since = time.monotonic()
            return
        if message[:1] == b"P":
            age_text, _, pid_text = message[1:].decode().partition(" ")
            waiting = self._waiting.pop(int(age_text), None)
            if waiting is not None:
                heartbeat = waiting[0]
                self._events.append(WorkerStarted(self.number, int(age_text), int(pid_text),
                                                  heartbeat))
            return
        super()._on_message(message)


def start_generation(number: int, cfg: Config, board: LoadBoard, *, method: str,
                     reread: bool, cli: dict[str, Any], fork: ForkFunction,
                     check_code: bool = True) -> Generation:
    """Start booting generation `number`; it reports GenerationReady or GenerationFailed.

    reread: read the settings again (a HUP) in the generation's interpreter; otherwise it
    runs with cfg. check_code: load the URLconf before reporting ready.
    """
    verbose = number == 0  # at start-up a traceback helps; on reload one line says why

    def zygote(probe: bool) -> ZygoteProcess:
        return ZygoteProcess(cfg, board, reread=reread, probe=probe, cli=cli,
                             check_code=check_code, verbose_errors=verbose)

    if method == "zygote":
        return ZygoteGeneration(number, cfg, board, boot=zygote(probe=False))
    # fork and exec workers need no interpreter of the generation's own, but a HUP's new
    # settings (and code) must be read in one: a probe reads them, reports, and exits. With
    # --reload an exec generation also needs one to list its files (a forking master that
    # has the project imported lists them itself).
    probe = reread or (method == "exec" and bool(cfg.reload))
    boot = zygote(probe=True) if probe else None
    if method == "fork":
        return ForkGeneration(number, cfg, board, boot=boot, fork=fork)
    return ExecGeneration(number, cfg, board, boot=boot)


def _json(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("a zygote sent a config that is not a JSON object")
    return data
