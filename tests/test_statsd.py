"""StatsD datagrams from a real server, received by sockets made here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from server import REPO_ROOT, TESTS_DIR, running


def collect(sock: socket.socket, done: Callable[[list[str]], bool],
            timeout: float = 20.0) -> list[str]:
    """Metric lines received until done(lines) or the deadline."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not done(lines):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"StatsD lines so far: {lines}")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        lines.extend(data.decode().splitlines())
    return lines


def count(lines: list[str], line: str) -> int:
    return sum(1 for item in lines if item == line)


def test_gunicorn_metric_names_with_prefix_and_tags() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    try:
        with running("--statsd-host", f"127.0.0.1:{port}", "--statsd-prefix", "myapp.",
                     "--dogstatsd-tags", "env:test,team:web") as server:
            for _ in range(2):
                assert server.get("/hello")[0] == 200
            assert server.get("/error")[0] == 500
            tags = "|#env:test,team:web"
            # A worker reports a request once its response is out: it is killed only once
            # it has reported all three, or the third report may die with it.
            lines = collect(
                receiver, lambda got: count(got, f"myapp.gunicorn.requests:1|c{tags}") == 3)
            # the master logs a killed worker as an error: gunicorn.log.error
            os.kill(server.worker_pids()[0], signal.SIGKILL)
            lines += collect(
                receiver,
                lambda got: (count(got, f"myapp.gunicorn.log.error:1|c{tags}") >= 1
                             and any(x.startswith("myapp.gunicorn.workers:1|g") for x in got)))
        assert count(lines, f"myapp.gunicorn.request.status.200:1|c{tags}") == 2
        assert count(lines, f"myapp.gunicorn.request.status.500:1|c{tags}") == 1
        timers = [x for x in lines if x.startswith("myapp.gunicorn.request.duration:")]
        assert len(timers) == 3
        for timer in timers:
            assert timer.endswith(f"|ms{tags}")
            assert float(timer.split(":", 1)[1].split("|", 1)[0]) >= 0
        assert f"myapp.gunicorn.workers:1|g{tags}" in lines
    finally:
        receiver.close()


def test_unix_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "statsd.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        with running("--statsd-host", f"unix:{path}") as server:
            assert server.get("/hello")[0] == 200
            lines = collect(receiver,
                            lambda got: count(got, "gunicorn.requests:1|c") == 1)
        assert "gunicorn.request.status.200:1|c" in lines
    finally:
        receiver.close()


def test_a_statsd_host_nobody_listens_on_costs_no_request() -> None:
    """Datagrams to a closed port are refused (ICMP): requests must not notice."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with running("--statsd-host", f"127.0.0.1:{port}") as server:
        for _ in range(20):
            assert server.get("/hello")[0] == 200
        assert "Traceback" not in server.output


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:0", "unix:", "[::1]"])
def test_bad_statsd_host_gives_one_line(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "django", "runprefork", "--settings=testproject.settings",
         "--statsd-host", value],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        env={"PYTHONPATH": f"{TESTS_DIR}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--statsd-host" in lines[0] and "Fix:" in lines[0]


def test_error_log_records_are_counted_as_gunicorn_does() -> None:
    """warning, error, exception (an error with a traceback) and critical, each once."""
    import logging

    from django_prefork.metrics.statsd import StatsdClient, count_log_records

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    client = StatsdClient(f"127.0.0.1:{receiver.getsockname()[1]}")
    log = logging.getLogger("django_prefork.error")
    level = log.level
    log.setLevel(logging.INFO)
    count_log_records(client)
    try:
        log.info("not counted")
        log.warning("w")
        log.error("e")
        try:
            raise RuntimeError("x")
        except RuntimeError:
            log.exception("x")
        log.critical("c")
        lines = collect(receiver, lambda got: len(got) >= 4)
    finally:
        count_log_records(None)
        log.setLevel(level)
        client.close()
        receiver.close()
    assert lines == ["gunicorn.log.warning:1|c", "gunicorn.log.error:1|c",
                     "gunicorn.log.exception:1|c", "gunicorn.log.critical:1|c"]


def test_backlog_metric_reports_queued_connections() -> None:
    """--enable-backlog-metric: gunicorn.backlog histograms carry the accept queue's length."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        with running("--statsd-host", f"127.0.0.1:{port}", "--enable-backlog-metric",
                     "--workers", "1") as server:
            lines = collect(receiver, lambda got: any(
                x.startswith("gunicorn.backlog:") for x in got))
            assert "gunicorn.backlog:0|h" in lines  # nothing queued yet
            # the one sync worker sleeps in a request; three more connections wait unaccepted
            busy = socket.create_connection((server.host, server.port), timeout=30)
            queued.append(busy)
            busy.sendall(b"GET /sleep?s=8 HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(3):
                queued.append(socket.create_connection((server.host, server.port), timeout=30))
            lines = collect(receiver, lambda got: "gunicorn.backlog:3|h" in got)
            assert all(x.endswith("|h") for x in lines if x.startswith("gunicorn.backlog:"))
    finally:
        for sock in queued:
            sock.close()
        receiver.close()


def test_no_backlog_metric_unless_enabled() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    try:
        with running("--statsd-host", f"127.0.0.1:{port}") as server:
            assert server.get("/hello")[0] == 200
            # the workers gauge is sent every second; wait for two of them
            lines = collect(receiver, lambda got: sum(
                x.startswith("gunicorn.workers:") for x in got) >= 2)
        assert not any(x.startswith("gunicorn.backlog:") for x in lines)
    finally:
        receiver.close()
