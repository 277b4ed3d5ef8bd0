"""/-/live and /-/ready on the metrics address, from a real server."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from test_metrics import get_status, metrics_base, settled

from django_prefork.conf import Config
from django_prefork.metrics.board import MetricsBoard
from django_prefork.metrics.health import MainBindHealth
from django_prefork.metrics.master import MasterObserver, open_metrics_listener
from django_prefork.workers.loadboard import LoadBoard
from server import running, wait_until


def test_live_and_ready_while_serving() -> None:
    with running("--metrics-bind", "127.0.0.1:0") as server:
        base = metrics_base(server)
        assert get_status(base, "/-/live") == 200
        assert get_status(base, "/-/ready") == 200
        assert get_status(base, "/-/live", method="HEAD") == 200
        assert get_status(base, "/nope") == 404
        assert get_status(base, "/-/ready", method="POST") == 405


def test_ready_turns_503_on_graceful_stop_while_the_request_in_flight_completes(
        tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with running("--metrics-bind", "127.0.0.1:0", "--graceful-timeout", "30") as server:
        base = metrics_base(server)
        assert get_status(base, "/-/ready") == 200
        results: list[tuple[int, bytes]] = []

        release = tmp_path / "release"

        def slow() -> None:
            status, _, body = server.get(f"/sleep?s=60&release={release}&mark={mark}",
                                         timeout=90)
            results.append((status, body))

        client = threading.Thread(target=slow)
        client.start()
        try:
            wait_until(mark.exists, timeout=20, message="the slow request running")
            server.signal(signal.SIGTERM)
            wait_until(lambda: get_status(base, "/-/ready") == 503, timeout=20,
                       message="/-/ready answering 503 during the graceful stop")
            # the master still runs and its worker is finishing the request: alive
            assert get_status(base, "/-/live") == 200
            assert not results, "the slow request must still be in flight"
        finally:
            release.touch()
            client.join(30)
        assert results and results[0][0] == 200, results
        assert results[0][1].startswith(b"slept ")
        assert server.wait_exit(30) == 0


class _Record:
    def __init__(self, ready: bool) -> None:
        self.ready = ready


class _View:
    """The arbiter as the observer sees it: its workers and listeners."""

    def __init__(self) -> None:
        self.workers: dict[int, _Record] = {}
        self.listeners: list = []
        self.generation = 0


def test_live_and_ready_follow_the_workers_and_the_drain() -> None:
    """The answers' logic, without waiting for a server to be caught between states: no
    worker (all died, none back yet) means not live; a booting worker is live, not ready."""
    view = _View()
    observer = MasterObserver(Config(), LoadBoard().fd, None, view)
    assert observer.respond("/-/live")[0] == 503
    assert observer.respond("/-/ready")[0] == 503
    view.workers[1] = _Record(ready=False)  # booting
    assert observer.respond("/-/live")[0] == 200
    assert observer.respond("/-/ready")[0] == 503
    view.workers[1].ready = True
    assert observer.respond("/-/ready")[0] == 200
    observer.set_ready(False)  # graceful stop, WINCH, upgrade hand-over
    assert observer.respond("/-/ready")[0] == 503
    assert observer.respond("/-/live")[0] == 200


def test_health_paths_on_the_main_bind_are_answered_before_django() -> None:
    with running("--health-on-main-bind", "--metrics-bind", "127.0.0.1:0") as server:
        base = metrics_base(server)
        status, headers, body = server.get("/-/live")
        assert (status, body) == (200, b"live\n")
        assert headers["connection"] == "close"
        assert server.get("/-/ready?probe=1")[:3:2] == (200, b"ready\n")
        assert server.request("HEAD", "/-/ready")[0] == 200
        assert server.request("POST", "/-/live", body=b"x")[0] == 405
        assert server.get("/hello")[0] == 200
        values = settled(base, "prefork_request_duration_seconds_count", 1)
        assert values['prefork_requests_total{method="GET",status="200"}'] == 1  # not probes


def test_without_the_setting_the_paths_reach_django() -> None:
    with running() as server:
        assert server.get("/-/live")[0] == 404  # the test project has no such URL


def test_ready_on_the_main_bind_follows_the_master() -> None:
    board = MetricsBoard.create(LoadBoard().fd)
    check = MainBindHealth(board).check
    assert check("GET", "/hello") is None
    assert check("GET", "/-/ready").startswith(b"HTTP/1.1 200 OK\r\n")
    board.set_ready(False)  # what MasterObserver.set_ready(False) does
    assert check("GET", "/-/ready").startswith(b"HTTP/1.1 503 ")
    assert check("GET", "/-/live").startswith(b"HTTP/1.1 200 OK\r\n")
    assert check("HEAD", "/-/ready").endswith(b"\r\n\r\n")


def test_an_upgraded_master_adopts_the_old_masters_metrics_socket() -> None:
    """The old master still holds the port during a hand-over: the new one must take the
    socket it is given rather than bind again (which would fail)."""
    old = MasterObserver(Config(), LoadBoard().fd, open_metrics_listener(
        Config.from_dict({"metrics_bind": "127.0.0.1:0"})), _View())
    fd = old.listener_fd()
    assert fd is not None
    cfg = Config.from_dict({"metrics_bind": old.url().removeprefix("http://")[:-len("/metrics")]})
    adopted = open_metrics_listener(cfg, inherited_fd=os.dup(fd))
    assert adopted is not None and adopted.url() + "/metrics" == old.url()
    adopted.close()
    old.close()
    assert MasterObserver(Config(), LoadBoard().fd, None, _View()).listener_fd() is None
