"""CPU cost of recording one request: our metrics board vs prometheus-client's multiprocess
mode (docs/observability.md). Run: python bench/metrics_record.py [calls]

Each "request" is what the HTTP core does per request with metrics on: one accepted
connection, in-flight up, then method/status/bytes/duration counted and in-flight down.
CPU time (time.process_time), N requests in ROUNDS rounds, the best round counted, so other
load on the machine matters less than with wall time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

from django_prefork.metrics.board import MetricsBoard
from django_prefork.metrics.recorder import RequestRecorder, ThreadedRecorder
from django_prefork.workers.loadboard import LoadBoard

ROUNDS = 10


def per_call_ns(body: Callable[[int], None], calls: int) -> float:
    """CPU ns per call: the best of ROUNDS rounds of calls/ROUNDS calls each (the best
    round is the one least disturbed by other processes on the machine)."""
    per_round = max(1, calls // ROUNDS)
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        body(per_round)
        best = min(best, time.process_time() - start)
    return best / per_round * 1e9


def board_recorder(multithread: bool) -> RequestRecorder | ThreadedRecorder:
    board = MetricsBoard.create(LoadBoard().fd)
    base = board.join(os.getpid())
    assert base is not None
    if multithread:
        return ThreadedRecorder(board, os.getpid(), base, None)
    return RequestRecorder(board, base, None)


def ours(multithread: bool) -> Callable[[int], None]:
    recorder = board_recorder(multithread)
    accepted, started = recorder.connection_accepted, recorder.request_started

    def body(n: int) -> None:
        for i in range(n):  # as http/connection.py calls them
            accepted()
            started().request_finished("GET", "200 OK", 1234, 0.0042 if i & 1 else 0.0007)

    return body


def empty_loop() -> Callable[[int], None]:
    def body(n: int) -> None:
        for _ in range(n):
            pass

    return body


def statsd_only() -> Callable[[int], None]:
    """StatsD alone: one datagram per request to a local socket nobody reads (so most
    sends fail with EAGAIN once its buffer is full, as with a stalled agent)."""
    import socket

    from django_prefork.metrics.statsd import StatsdClient

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    recorder = RequestRecorder(None, None, StatsdClient(f"127.0.0.1:{sink.getsockname()[1]}"))
    finished = recorder.request_finished

    def body(n: int) -> None:
        for i in range(n):
            finished("GET", "200 OK", 1234, 0.0042 if i & 1 else 0.0007)

    return body


def prometheus_multiprocess() -> Callable[[int], None]:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-mp-")
    from prometheus_client import Counter, Gauge, Histogram

    buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
    requests = Counter("requests", "r", ["method", "status"])
    duration = Histogram("duration_seconds", "d", buckets=buckets)
    in_flight = Gauge("in_flight", "i", multiprocess_mode="livesum")
    sent = Counter("response_bytes", "b")
    accepted = Counter("accepted", "a")

    def body(n: int) -> None:
        for i in range(n):
            accepted.inc()
            in_flight.inc()
            requests.labels("GET", "200").inc()
            duration.observe(0.0042 if i & 1 else 0.0007)
            sent.inc(1234)
            in_flight.dec()

    return body


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"{calls:,} requests each, CPU ns per request (best of {ROUNDS} rounds)")
    print(f"empty loop (included in every row):   {per_call_ns(empty_loop(), calls):7.0f}")
    print(f"metrics board, sync/gevent (no lock): {per_call_ns(ours(False), calls):7.0f}")
    print(f"metrics board, gthread (thread lanes): {per_call_ns(ours(True), calls):7.0f}")
    mp_calls = max(1, calls // 10)
    print(f"StatsD datagram only:                 "
          f"{per_call_ns(statsd_only(), mp_calls):7.0f}  ({mp_calls:,} requests)")
    print(f"prometheus-client multiprocess:       "
          f"{per_call_ns(prometheus_multiprocess(), mp_calls):7.0f}  ({mp_calls:,} requests)")


if __name__ == "__main__":
    main()
