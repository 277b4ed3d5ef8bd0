"""The per-request timeout on every worker class, over real sockets (workers/inflight.py).

A request past `timeout` is logged with its request line and the stack of the thread or
greenlet running it, and stopped: sync by the master (SIGABRT, a 500 when nothing was sent),
gthread by answering 503 and replacing the worker gracefully, gevent by killing the
greenlet (503). A warning with the stack comes at half the timeout. Others are served
throughout.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from test_workers_toolkit import CLASS_ARGS

from server import Server, wait_until

pytestmark = pytest.mark.integration

#: What the client of a stopped request gets, by class (docs/workers.md, "Timeouts").
STOPPED_STATUS = {"sync": 500, "gthread": 503, "gevent": 503}
#: Sleeps longer than twice the timeout: a 200 would mean nothing stopped it.
SLOW_PATH = "/sleep?s=8"


class LoopingClient:
    """GET /hello on a new connection, over and over, until stopped; every status kept."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.results: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(self.server.get("/hello", timeout=10)[0])
            except Exception as exc:  # reported by the caller's assertion
                self.results.append(exc)
            time.sleep(0.05)

    def __enter__(self) -> LoopingClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)


@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_request_past_timeout_is_logged_with_its_stack_and_stopped(worker: str):
    if worker == "gevent":
        pytest.importorskip("gevent")
    workers = 2 if worker == "sync" else 1  # a sync worker in a request serves no one else
    server = Server("--workers", str(workers), *CLASS_ARGS[worker], "--timeout", "3",
                    "--graceful-timeout", "10").start(wait_workers=workers)
    try:
        with LoopingClient(server) as others:
            wait_until(lambda: len(others.results) >= 3, message="the other client")
            began = time.monotonic()
            status, _, _ = server.get(SLOW_PATH, timeout=30)
            took = time.monotonic() - began
            served_meanwhile = len(others.results)
            wait_until(lambda: len(others.results) >= served_meanwhile + 3,
                       message="the other client after the stop")
        assert status == STOPPED_STATUS[worker], (status, server.output)
        assert took < 7, f"the stopped request took {took:.1f} s (its view sleeps 8 s)"
        assert [r for r in others.results if r != 200] == [], others.results

        wait_until(lambda: "Slow request" in server.output, message="the slow-request line")
        out = server.output
        stop_line = "WORKER TIMEOUT" if worker == "sync" else "Request timeout"
        assert f"{stop_line} (pid:" in out
        lines = out.splitlines()
        for marker in ("Slow request", stop_line):
            # the line names the request, and the stack of its own thread or greenlet,
            # down to the view, follows it
            first = next(i for i, line in enumerate(lines)
                         if marker in line and f"GET {SLOW_PATH} HTTP/1.1" in line)
            end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("[")),
                       len(lines))  # the next log record
            stack = "\n".join(lines[first + 1:end])
            assert "testproject/views.py" in stack and "in sleep" in stack, stack
        if worker == "gthread":
            assert "Replacing this worker" in out
    finally:
        server.stop()


def test_gthread_stopped_request_leaves_the_other_threads_requests_to_finish():
    """The worker replaced for a stuck thread lets a request running on another thread
    finish with its 200."""
    server = Server("--workers", "1", *CLASS_ARGS["gthread"], "--timeout", "3",
                    "--graceful-timeout", "10").start()
    try:
        results: dict[str, Any] = {}

        def get(path: str) -> None:
            results[path] = server.get(path, timeout=30)[0]

        slow = threading.Thread(target=get, args=(SLOW_PATH,))
        slow.start()
        # Half the timeout in: start another request that outlives the stop (at 3 to 4 s).
        wait_until(lambda: "Slow request" in server.output, message="the slow-request line")
        other = threading.Thread(target=get, args=("/sleep?s=2.8",))
        other.start()
        slow.join(30)
        other.join(30)
        assert results == {SLOW_PATH: 503, "/sleep?s=2.8": 200}, (results, server.output)
        stop = server.output.index("Request timeout")
        assert "GET /sleep?s=2.8" not in server.output[stop:].splitlines()[0]
    finally:
        server.stop()


@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_request_stopped_after_its_response_started_ends_the_connection(worker: str):
    """Bytes of the response went out: no status can be sent any more, so the connection
    is closed mid-body (the client sees a truncated response, never a whole one)."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    server = Server("--workers", "1", *CLASS_ARGS[worker], "--timeout", "3").start()
    try:
        began = time.monotonic()
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.sendall(b"GET /slow_stream?s=8 HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        took = time.monotonic() - began
        assert received.startswith(b"HTTP/1.1 200 OK"), received
        assert b"first part" in received and b"second part" not in received, received
        assert not received.endswith(b"0\r\n\r\n"), received  # no last chunk: truncated
        assert took < 7, f"closed after {took:.1f} s (the view takes 8 s)"
    finally:
        server.stop()
