"""The load board: connections per worker in shared memory, for fair accept.

Unit tests of the board itself, then the real thing: the board of a running master, read
through /proc/<master>/fd, must list every worker (forked, zygote-forked and exec'd) with
the connections it holds, and lose a worker that was killed.
"""

from __future__ import annotations

import http.client
import mmap
import os
import signal
import sys

import pytest

from django_prefork.workers.loadboard import FULL, SLOTS, FairAccept, LoadBoard
from server import Server, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


@pytest.fixture
def board():
    board = LoadBoard()
    yield board
    board.close()


def _worker_view(board: LoadBoard, pid: int) -> LoadBoard:
    """What a worker started as a fresh interpreter does: map the inherited fd."""
    view = LoadBoard(os.dup(board.fd))
    view.join(pid)
    return view


def test_fair_accept_defers_once_then_takes_the_connection(board):
    """A connection is left to a less loaded worker for one back-off only: if it is still
    there, the deferring worker takes it (none starves while every worker is busy)."""
    busy, idle = _worker_view(board, 1001), _worker_view(board, 1002)
    busy.publish(20)
    idle.publish(0)
    fair = FairAccept(busy, floor=16)
    assert [fair.defer(20), fair.defer(20), fair.defer(20), fair.defer(20)] == [
        True, False, True, False]
    assert fair.defer(10) is False  # below the floor: never defers
    idle.publish(19)
    assert fair.defer(20) is False  # no one holds two fewer


def test_a_worker_defers_only_to_one_holding_two_fewer(board):
    a, b = _worker_view(board, 1001), _worker_view(board, 1002)
    a.publish(5)
    b.publish(4)
    assert not a.someone_less_loaded(5)  # one fewer is noise
    b.publish(3)
    assert a.someone_less_loaded(5)
    assert not b.someone_less_loaded(3)  # the less loaded one never defers
    assert board.loads() == {1001: 5, 1002: 3}


def test_below_the_floor_a_worker_never_defers(board):
    a, b = _worker_view(board, 1001), _worker_view(board, 1002)
    a.publish(10)
    b.publish(0)
    assert a.someone_less_loaded(10, floor=10)
    assert not a.someone_less_loaded(9, floor=10)


def test_full_and_departed_workers_are_not_waited_for(board):
    a, b = _worker_view(board, 1001), _worker_view(board, 1002)
    a.publish(20)
    b.publish(FULL)
    assert not a.someone_less_loaded(20)
    b.publish(0)
    assert a.someone_less_loaded(20)
    b.leave()
    assert not a.someone_less_loaded(20)
    b.publish(0)  # after leave(): no effect
    assert board.loads() == {1001: 20}


def test_master_forgets_a_dead_worker_and_the_slot_is_reused(board):
    a = _worker_view(board, 1001)
    _worker_view(board, 1002).publish(0)
    a.publish(9)
    board.forget(1002)
    assert not a.someone_less_loaded(9)
    assert board.loads() == {1001: 9}
    _worker_view(board, 1003)
    assert board.loads() == {1001: 9, 1003: 0}
    assert board._ints[0] == 2  # 1003 took the freed slot: the scan stays short


def test_a_worker_without_a_free_slot_stays_off_the_board(board):
    for pid in range(1, SLOTS + 1):
        _worker_view(board, pid)
    late = _worker_view(board, SLOTS + 1)
    late.publish(100)
    assert SLOTS + 1 not in board.loads()
    assert not late.someone_less_loaded(100)


def test_a_forked_process_writes_where_the_master_reads(board):
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            board.join(os.getpid())
            board.publish(7)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert board.loads() == {pid: 7}
    board.forget(pid)
    assert board.loads() == {}


# -- the board of a running server ---------------------------------------------------------

def master_board(master_pid: int) -> LoadBoard:
    """Map the master's board (its memfd) from /proc, read-only use."""
    fd_dir = f"/proc/{master_pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if "django-prefork-load" in target:
            fd = os.open(f"{fd_dir}/{name}", os.O_RDWR)
            board = LoadBoard.__new__(LoadBoard)
            board.fd = fd
            board._map = mmap.mmap(fd, 0)
            board._ints = memoryview(board._map).cast("i")
            board._load_index = 0
            return board
    raise AssertionError(f"no load board among the master's descriptors: {os.listdir(fd_dir)}")


def check_board_follows_workers(*args: str, env: dict[str, str] | None = None) -> None:
    with Server("--workers", "2", *args, env=env) as server:
        server.start(wait_workers=2)
        board = master_board(server.pid)
        try:
            wait_until(lambda: set(board.loads()) == set(server.ready_workers()),
                       message=f"workers on the board: {board.loads()}")
            # Keep-alive connections held open count on the board of whoever took them.
            conns = [http.client.HTTPConnection(server.host, server.port, timeout=10)
                     for _ in range(3)]
            try:
                for conn in conns:
                    conn.request("GET", "/pid")
                    assert conn.getresponse().read().isdigit()
                wait_until(lambda: sum(board.loads().values()) == 3,
                           message=f"3 connections on the board: {board.loads()}")
            finally:
                for conn in conns:
                    conn.close()
            wait_until(lambda: sum(board.loads().values()) == 0,
                       message=f"closed connections off the board: {board.loads()}")

            victim = server.ready_workers()[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in board.loads() and len(board.loads()) == 2
                       and set(board.loads()) == set(server.ready_workers()),
                       message=f"the killed worker replaced on the board: {board.loads()}")
        finally:
            board.close()


def test_board_follows_forked_gthread_workers():
    check_board_follows_workers("--worker-class", "gthread", "--threads", "2")


def test_board_follows_zygote_gevent_workers():
    pytest.importorskip("gevent")
    check_board_follows_workers("--worker-class", "gevent")


def test_board_follows_execd_gevent_workers():
    pytest.importorskip("gevent")
    check_board_follows_workers("--worker-class", "gevent",
                                env={"DJANGO_PREFORK_NO_ZYGOTE": "1"})
