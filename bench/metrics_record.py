"""CPU cost of recording one request: our metrics board vs prometheus-client's multiprocess
mode (docs/observability.md). Run: python bench/metrics_record.py [calls]

Each "request" is what the HTTP core does per request with metrics on: one accepted
connection, in-flight up, then method/status/bytes/duration counted and in-flight down.
CPU time (time.process_time) over N requests, best of 3, so other load on the machine
matters less than with wall time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

from django_prefork.metrics.board import MetricsBoard
from django_prefork.metrics.recorder import RequestRecorder
from django_prefork.workers.loadboard import LoadBoard


def per_call_ns(body: Callable[[int], None], calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        body(calls)
        best = min(best, time.process_time() - start)
    return best / calls * 1e9


def board_recorder(multithread: bool) -> RequestRecorder:
    board = MetricsBoard.create(LoadBoard().fd)
    return RequestRecorder(board, board.join(os.getpid()), None, multithread)


def ours(multithread: bool) -> Callable[[int], None]:
    recorder = board_recorder(multithread)
    accepted, started, finished = (recorder.connection_accepted, recorder.request_started,
                                   recorder.request_finished)

    def body(n: int) -> None:
        for i in range(n):
            accepted()
            started()
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
    print(f"{calls:,} requests each, CPU ns per request (best of 3)")
    print(f"metrics board, sync/gevent (no lock): {per_call_ns(ours(False), calls):7.0f}")
    print(f"metrics board, gthread (with lock):   {per_call_ns(ours(True), calls):7.0f}")
    mp_calls = max(1, calls // 10)
    print(f"prometheus-client multiprocess:       "
          f"{per_call_ns(prometheus_multiprocess(), mp_calls):7.0f}  ({mp_calls:,} requests)")


if __name__ == "__main__":
    main()
