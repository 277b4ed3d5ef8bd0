"""The gevent worker's connection greenlets (workers/greenlets.py), driven in this process by
gevent's hub with plain functions in place of connections."""

from __future__ import annotations

import pytest

gevent = pytest.importorskip("gevent")

from gevent.event import Event  # noqa: E402

from django_prefork.workers.greenlets import ConnectionGreenlets  # noqa: E402
from django_prefork.workers.inflight import RequestTimedOut  # noqa: E402


def test_a_finished_greenlet_serves_the_next_connection():
    ran = []
    pool = ConnectionGreenlets(4, lambda n: ran.append((n, gevent.getcurrent())))
    for n in range(5):
        pool.spawn(n)
        pool.join(timeout=5)
    assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
    assert len({id(g) for _, g in ran}) == 1  # one greenlet, used five times
    pool.stop_idle()


def test_size_bounds_what_runs_at_once_and_room_comes_back():
    release = Event()
    running = []

    def serve(n):
        running.append(n)
        release.wait()
        running.remove(n)

    pool = ConnectionGreenlets(2, serve)
    pool.spawn(1)
    pool.spawn(2)
    assert pool.full() and pool.free_count() == 0
    gevent.sleep(0)
    assert sorted(running) == [1, 2]
    pool.wait_available(timeout=0.05)  # no room: returns at the timeout
    assert pool.full()
    release.set()
    pool.wait_available(timeout=5)
    pool.join(timeout=5)
    assert not pool.full() and pool.free_count() == 2 and running == []
    pool.stop_idle()


def test_an_exception_in_serve_frees_the_room():
    def serve():
        raise RuntimeError("a bug below the worker's own guard")

    pool = ConnectionGreenlets(1, serve)
    hub = gevent.get_hub()
    hub.NOT_ERROR = (*hub.NOT_ERROR, RuntimeError)  # the hub would print it; expected here
    try:
        pool.spawn()
        pool.join(timeout=5)
    finally:
        hub.NOT_ERROR = tuple(e for e in hub.NOT_ERROR if e is not RuntimeError)
    assert pool.free_count() == 1


def test_a_late_request_timeout_leaves_an_idle_greenlet_waiting():
    """The request watch throws RequestTimedOut into the greenlet that ran the request; if it
    lands just after the request ended, the idle greenlet ignores it and serves on."""
    seen = []
    pool = ConnectionGreenlets(2, lambda n: seen.append((n, gevent.getcurrent())))
    pool.spawn(1)
    pool.join(timeout=5)
    greenlet = seen[0][1]
    gevent.kill(greenlet, RequestTimedOut)
    gevent.sleep(0.01)
    assert not greenlet.dead
    pool.spawn(2)
    pool.join(timeout=5)
    assert seen[1] == (2, greenlet)
    pool.stop_idle()


def test_stop_idle_ends_the_waiting_greenlets_and_keep_idle_bounds_them():
    release = Event()
    seen = []

    def serve(n):
        seen.append(gevent.getcurrent())
        release.wait()

    pool = ConnectionGreenlets(8, serve, keep_idle=2)
    for n in range(5):
        pool.spawn(n)
    gevent.sleep(0)
    release.set()
    pool.join(timeout=5)
    gevent.sleep(0)
    alive = [g for g in seen if not g.dead]
    assert len(alive) == 2  # three ended with their connection: more than keep_idle
    pool.stop_idle()
    gevent.sleep(0.01)
    assert all(g.dead for g in seen)
