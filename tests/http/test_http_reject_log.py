"""Rejected requests are logged: one warning per request (peer, reason, no payload),
rate-limited per worker with a "N similar lines suppressed" summary (issue 15.8)."""

from __future__ import annotations

import logging
import re
import socket
import time

import pytest

from django_prefork.http.errors import BadRequest, RequestLineTooLong
from django_prefork.http.rejectlog import (
    REJECT_LOG_BURST,
    RateLimitedWarnings,
    describe_peer,
    safe_reason,
)
from server import Server, wait_until

PAYLOAD = b"SECRET-PAYLOAD-7f3a"
INVALID_RE = re.compile(r"Invalid request from 127\.0\.0\.1:\d+: 400 ")
SUPPRESSED_RE = re.compile(r"(\d+) similar lines suppressed")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate_and_summarises(caplog):
    clock = FakeClock()
    logger = logging.getLogger("test.rejectlog")
    limited = RateLimitedWarnings(logger, burst=3, rate=2.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.rejectlog"):
        logged = [limited.warning("line %d", i) for i in range(10)]
        assert logged == [True] * 3 + [False] * 7
        clock.now += 0.5  # one token back at 2 per second
        assert limited.warning("line after") is True
        assert limited.warning("one more") is False
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["line 0", "line 1", "line 2",
                        "7 similar lines suppressed (rejected requests)", "line after"]


def test_bucket_never_holds_more_than_the_burst():
    clock = FakeClock()
    limited = RateLimitedWarnings(logging.getLogger("test.rejectlog2"), burst=2, rate=1.0,
                                  clock=clock)
    clock.now += 3600
    assert [limited.warning("x") for _ in range(4)] == [True, True, False, False]


def test_peer_and_reason_are_safe_to_log():
    assert describe_peer(("127.0.0.1", 5000)) == "127.0.0.1:5000"
    assert describe_peer(("::1", 5000, 0, 0)) == "[::1]:5000"
    assert describe_peer("") == "unix socket peer"
    assert describe_peer(b"/run/x.sock") == "unix:/run/x.sock"
    assert safe_reason(BadRequest("bad\r\nInjected: line\x1b[31m")) == (
        "bad\\x0d\\x0aInjected: line\\x1b[31m")
    assert len(safe_reason(BadRequest("x" * 5000))) < 100
    # An error without a message is named by its docstring's first line.
    assert safe_reason(RequestLineTooLong()) == "Request line longer than `limit_request_line`."


def bad_request(server: Server) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE " + PAYLOAD + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def count(server: Server, regex: re.Pattern[str]) -> list[re.Match[str]]:
    return [m for line in server.output.splitlines() for m in [regex.search(line)] if m]


@pytest.mark.integration
def test_a_flood_of_bad_requests_is_logged_within_the_budget():
    # Default log level (info): the warnings must show. One worker, so one bucket.
    with Server("--workers", "1") as server:
        server.start()
        first = bad_request(server)
        assert first.startswith(b"HTTP/1.1 400 ")
        wait_until(lambda: count(server, INVALID_RE), timeout=20, message="the warning line")
        lines = [line for line in server.output.splitlines() if INVALID_RE.search(line)]
        assert PAYLOAD.decode() not in server.output  # the reason, never the request
        assert "[WARNING]" in lines[0]

        sent = 1
        started = time.monotonic()
        for _ in range(REJECT_LOG_BURST * 5):
            assert bad_request(server).startswith(b"HTTP/1.1 400 ")
            sent += 1
        flood_seconds = time.monotonic() - started
        # Then keep sending, slowly, until a token comes back and the summary is written.
        deadline = time.monotonic() + 30
        while not count(server, SUPPRESSED_RE):
            assert time.monotonic() < deadline, server.output[-3000:]
            bad_request(server)
            sent += 1
            try:
                server.wait_for_line(SUPPRESSED_RE, timeout=0.5)
            except AssertionError:
                pass
        logged = len(count(server, INVALID_RE))
        suppressed = sum(int(m.group(1)) for m in count(server, SUPPRESSED_RE))
        assert logged + suppressed == sent  # every rejection accounted for, once
        elapsed = time.monotonic() - started
        assert logged <= REJECT_LOG_BURST + 2 + elapsed * 1.0, (logged, flood_seconds)
        assert server.get("/hello")[0] == 200  # and the worker serves on
