"""Prometheus metrics from a real server: values that move with known requests, across a
killed worker, for every worker class; a bad --metrics-bind; a slow scraper."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from server import REPO_ROOT, TESTS_DIR, Server, pid_alive, running, wait_until

METRICS_RE = re.compile(r"Metrics at: (http://\S+)/metrics")


def metrics_base(server: Server) -> str:
    return server.wait_for_line(METRICS_RE).group(1)


def scrape(base: str) -> dict[str, float]:
    """{'name{labels}': value} of one /metrics answer."""
    with urllib.request.urlopen(base + "/metrics", timeout=20) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def requests_of(values: dict[str, float], method: str, status: str) -> float:
    return values.get(f'prefork_requests_total{{method="{method}",status="{status}"}}', 0)


def settled(base: str, key: str, expected: float) -> dict[str, float]:
    """A scrape once `key` reached `expected`: a worker counts a request just after its
    response went out, so a client may scrape a moment before the count lands."""
    found: dict[str, float] = {}

    def reached() -> bool:
        found.clear()
        found.update(scrape(base))
        return found.get(key, 0) == expected

    wait_until(reached, timeout=20, message=f"{key} == {expected} (last: {found.get(key)})")
    return found


def get_status(base: str, path: str, method: str = "GET") -> int:
    req = urllib.request.Request(base + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_metrics_move_with_requests_and_survive_a_killed_worker() -> None:
    with running("--metrics-bind", "127.0.0.1:0", "-w", "2", wait_workers=2) as server:
        base = metrics_base(server)
        before = scrape(base)
        assert before["prefork_workers"] == 2
        assert before["prefork_request_duration_seconds_count"] == 0

        sent = 0
        for _ in range(5):
            status, _, body = server.get("/hello")
            assert status == 200
            sent += len(body)
        for payload in (b"abc", b"x" * 1000):
            status, _, body = server.request("POST", "/echo", body=payload)
            assert status == 200
            sent += len(body)
        status, _, body = server.get("/error")
        assert status == 500
        sent += len(body)
        status, _, body = server.get("/sleep?s=0.3")
        assert status == 200
        sent += len(body)

        values = settled(base, "prefork_request_duration_seconds_count", 9)
        assert requests_of(values, "GET", "200") == 6
        assert requests_of(values, "POST", "200") == 2
        assert requests_of(values, "GET", "500") == 1
        assert values["prefork_request_duration_seconds_count"] == 9
        assert values['prefork_request_duration_seconds_bucket{le="+Inf"}'] == 9
        # the 0.3 s request is above the 0.25 s bound and within 0.5 s
        assert values['prefork_request_duration_seconds_bucket{le="0.5"}'] - values[
            'prefork_request_duration_seconds_bucket{le="0.25"}'] >= 1
        assert values["prefork_request_duration_seconds_sum"] >= 0.3
        assert values["prefork_response_bytes_total"] == sent
        assert values["prefork_connections_accepted_total"] == 9  # sync: one per request
        assert values["prefork_requests_in_flight"] == 0
        assert values["prefork_workers_busy"] == 0
        assert any(k.startswith("prefork_listen_backlog{") for k in values)

        # A SIGKILLed worker cannot report anything on its way out: its counts must stay.
        victim = server.worker_pids()[0]
        assert len(server.worker_pids()) == 2
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not pid_alive(victim), timeout=20, message="victim gone")
        wait_until(lambda: scrape(base)['prefork_worker_restarts_total{reason="crash"}'] == 1,
                   timeout=30, message="the crash counted")
        wait_until(lambda: len(server.ready_workers()) == 2, timeout=30,
                   message="a replacement worker")
        after = scrape(base)
        assert requests_of(after, "GET", "200") == 6
        assert requests_of(after, "POST", "200") == 2
        assert requests_of(after, "GET", "500") == 1
        assert after["prefork_response_bytes_total"] == sent
        assert after["prefork_connections_accepted_total"] == 9
        assert after["prefork_request_duration_seconds_count"] == 9
        wait_until(lambda: scrape(base)["prefork_workers"] == 2, timeout=30,
                   message="two workers again")

        for _ in range(3):
            assert server.get("/hello")[0] == 200
        settled(base, 'prefork_requests_total{method="GET",status="200"}', 9)


def test_in_flight_and_busy_workers(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with running("--metrics-bind", "127.0.0.1:0", "-w", "2", wait_workers=2) as server:
        base = metrics_base(server)
        results: list[int] = []
        release = tmp_path / "release"
        slow = threading.Thread(target=lambda: results.append(
            server.get(f"/sleep?s=60&release={release}&mark={mark}", timeout=90)[0]))
        slow.start()
        try:
            wait_until(mark.exists, timeout=20, message="the slow request running")
            values = scrape(base)
            assert values["prefork_requests_in_flight"] == 1
            assert values["prefork_workers_busy"] == 1
        finally:
            release.touch()
            slow.join(30)
        assert results == [200]
        values = settled(base, "prefork_request_duration_seconds_count", 1)
        assert values["prefork_requests_in_flight"] == 0
        assert values["prefork_workers_busy"] == 0


@pytest.mark.parametrize(("args", "env"), [
    (("-k", "gthread", "--threads", "4"), {}),
    (("-k", "gevent"), {}),
    (("-k", "gthread", "--threads", "2"), {"DJANGO_PREFORK_NO_ZYGOTE": "1"}),
], ids=["gthread", "gevent", "gthread-exec"])
def test_every_worker_class_counts(args: tuple[str, ...], env: dict[str, str]) -> None:
    """Forked, zygote-forked and exec'd workers all find the board (via the load board)."""
    with running("--metrics-bind", "127.0.0.1:0", *args, env=env) as server:
        base = metrics_base(server)
        if env:  # exec'd workers exist only after a reload: make a new generation
            server.signal(signal.SIGHUP)
            wait_until(lambda: scrape(base)['prefork_worker_restarts_total{reason="reload"}']
                       == 1, timeout=60, message="the reload done")
        conn = server.connection()
        try:  # three requests on one keep-alive connection
            for _ in range(3):
                conn.request("GET", "/hello")
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()
        finally:
            conn.close()
        values = settled(base, 'prefork_requests_total{method="GET",status="200"}', 3)
        assert values["prefork_connections_accepted_total"] == 1
        assert values["prefork_response_bytes_total"] == 3 * len(b"Hello, world")


def test_restart_reasons_max_requests_and_ttou() -> None:
    with running("--metrics-bind", "127.0.0.1:0", "-w", "1", "--max-requests", "2") as server:
        base = metrics_base(server)
        for _ in range(4):  # one worker recycles after the 2nd and after the 4th request
            assert server.get("/hello")[0] == 200
        settled(base, 'prefork_worker_restarts_total{reason="max_requests"}', 2)
        server.signal(signal.SIGTTIN)
        wait_until(lambda: len(server.ready_workers()) == 2, timeout=30,
                   message="two workers after TTIN")
        server.signal(signal.SIGTTOU)
        values = settled(base, 'prefork_worker_restarts_total{reason="ttou"}', 1)
        assert values['prefork_worker_restarts_total{reason="crash"}'] == 0
        assert values['prefork_worker_restarts_total{reason="max_requests"}'] == 2
        assert requests_of(values, "GET", "200") == 4
        settled(base, "prefork_workers", 1)


def test_unknown_methods_count_as_other() -> None:
    with running("--metrics-bind", "127.0.0.1:0") as server:
        base = metrics_base(server)
        for method in ("PROPFIND", "MKCOL", "GET"):
            assert server.request(method, "/hello")[0] == 200
        values = settled(base, "prefork_request_duration_seconds_count", 3)
        assert requests_of(values, "other", "200") == 2
        assert requests_of(values, "GET", "200") == 1
        assert not any("PROPFIND" in key or "MKCOL" in key for key in values)


def test_a_silent_or_oversized_scraper_does_not_hold_the_master() -> None:
    with running("--metrics-bind", "127.0.0.1:0") as server:
        base = metrics_base(server)
        host, port = base[len("http://"):].rsplit(":", 1)
        silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
        try:
            start = time.monotonic()
            assert get_status(base, "/-/ready") == 200  # answered while the others idle
            assert server.get("/hello")[0] == 200
            # the master's own loop still turns: it handles a signal
            server.signal(signal.SIGTTIN)
            wait_until(lambda: scrape(base)["prefork_workers"] == 2, timeout=30,
                       message="TTIN handled while clients idle")
            assert time.monotonic() - start < 30
            with socket.create_connection((host, int(port)), timeout=10) as big:
                big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000)
                answer = big.recv(4096)
            assert answer.startswith(b"HTTP/1.1 400 ")
            # an idle client is dropped after the deadline (5 s)
            silent[0].settimeout(20)
            assert silent[0].recv(10) == b""
        finally:
            for sock in silent:
                sock.close()


@pytest.mark.parametrize("value", ["unix:/tmp/metrics.sock", "127.0.0.1:http", "[::1"])
def test_bad_metrics_bind_gives_one_line_and_non_zero_exit(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "django", "runprefork", "--settings=testproject.settings",
         "--metrics-bind", value],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        env={"PYTHONPATH": f"{TESTS_DIR}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--metrics-bind" in lines[0]
    assert "Fix:" in lines[0]


def test_metrics_port_in_use_gives_one_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "django", "runprefork", "--settings=testproject.settings",
             "--bind", "127.0.0.1:0", "--metrics-bind", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            env={"PYTHONPATH": f"{TESTS_DIR}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
        )
    finally:
        taken.close()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "Could not bind" in line]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port}" in errors[0]


def test_gthread_threads_count_exactly_under_concurrency() -> None:
    """Each thread counts in a lane of its own: concurrent requests lose no count."""
    with running("--metrics-bind", "127.0.0.1:0", "-k", "gthread", "--threads", "4") as server:
        base = metrics_base(server)
        statuses: list[int] = []

        def client() -> None:
            for _ in range(10):
                statuses.append(server.get("/hello")[0])

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [200] * 80
        values = settled(base, 'prefork_requests_total{method="GET",status="200"}', 80)
        assert values["prefork_connections_accepted_total"] == 80
        assert values["prefork_response_bytes_total"] == 80 * len(b"Hello, world")
        assert values["prefork_requests_in_flight"] == 0
