"""When the master takes a zygote for hung (server/starter.py), with a stub zygote and a
clock the test moves: counted only once the zygote reads fork requests (its "S"), since
before that it may spend seconds listing files for --reload."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from django_prefork.conf import Config
from django_prefork.server import starter
from django_prefork.server.starter import (
    FORK_REPORT_TIMEOUT,
    GenerationFailed,
    WorkerStarted,
    ZygoteGeneration,
)
from django_prefork.workers.heartbeat import Heartbeat
from django_prefork.workers.loadboard import LoadBoard


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now


class StubZygote:
    """The master's end of a zygote, with the messages the test puts in its inbox."""

    pid = 424242
    exited = False
    eof = False

    def __init__(self) -> None:
        self.inbox: list[bytes] = []
        self.asked: list[int] = []

    def fileno(self) -> int:
        return -1

    def receive(self) -> list[bytes]:
        messages, self.inbox = self.inbox, []
        return messages

    def send_listeners(self, listeners: Any) -> None:
        pass

    def request_worker(self, age: int, heartbeat: Heartbeat) -> None:
        self.asked.append(age)

    def stop(self) -> None:
        pass

    def close_control(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(starter, "time", clock)
    return clock


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(starter.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


def ready_generation() -> tuple[ZygoteGeneration, StubZygote]:
    zygote = StubZygote()
    generation = ZygoteGeneration(1, Config(), LoadBoard(), boot=zygote)  # type: ignore[arg-type]
    generation._ready(Config())  # as if its b"R" had come
    generation.poll()
    return generation, zygote


def test_a_fork_unanswered_after_the_zygote_reads_requests_kills_it(
        clock: Clock, kills: list[tuple[int, int]]):
    generation, zygote = ready_generation()
    heartbeat = Heartbeat.for_worker(Config())
    generation.start_worker(7, heartbeat)
    assert zygote.asked == [7]

    clock.now += 60  # still listing its files for --reload: not hung
    generation.poll()
    assert kills == []

    zygote.inbox.append(b"S")
    generation.poll()
    clock.now += FORK_REPORT_TIMEOUT - 1
    generation.poll()
    assert kills == []
    clock.now += 2
    generation.poll()
    assert kills == [(zygote.pid, signal.SIGKILL)]
    generation.poll()
    assert len(kills) == 1  # once

    zygote.exited = True
    assert generation.child_exited(zygote.pid, 9)  # (a raw status: killed by signal 9)
    (failed,) = [e for e in generation.poll() if isinstance(e, GenerationFailed)]
    assert f"the zygote (pid:{zygote.pid}) did not report a worker" in failed.reason
    assert "and was killed" in failed.reason
    assert generation.pending_workers == 0  # the fork it waited for is given up


def test_a_fork_reported_in_time_is_not_counted(clock: Clock,
                                                 kills: list[tuple[int, int]]):
    generation, zygote = ready_generation()
    zygote.inbox.append(b"S")
    generation.poll()
    heartbeat = Heartbeat.for_worker(Config())
    generation.start_worker(3, heartbeat)
    clock.now += 1
    zygote.inbox.append(f"P3 {os.getpid()}".encode())
    (started,) = [e for e in generation.poll() if isinstance(e, WorkerStarted)]
    assert started.pid == os.getpid()
    clock.now += 10 * FORK_REPORT_TIMEOUT
    generation.poll()
    assert kills == []
    heartbeat.close()
