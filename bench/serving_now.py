"""CPU cost of showing each request's line and start on the metrics board for
`preforkctl status` (docs/observability.md, "preforkctl"). Run: python bench/serving_now.py

Times what a worker does per request around the application: RequestTracker.begin(conn) and
end(), without the board (as before) and publishing to it (RequestTracker.publish_to), for
a sync/gevent recorder and a gthread one (a lane per thread). CPU time, the best of ROUNDS
rounds (bench/metrics_record.py's method).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from metrics_record import ROUNDS, board_recorder, per_call_ns

from django_prefork.workers.inflight import RequestTracker


class _Conn:
    request_line = "GET /articles/2026/12/01/some-slug/?page=2 HTTP/1.1"


def tracked(board: Any) -> Callable[[int], None]:
    tracker = RequestTracker(threading.get_ident)
    tracker.publish_to(board)
    begin, end, conn = tracker.begin, tracker.end, _Conn()

    def body(n: int) -> None:
        for _ in range(n):
            begin(conn)
            end()

    return body


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"{calls:,} requests each, CPU ns per request (best of {ROUNDS} rounds)")
    bare = per_call_ns(tracked(None), calls)
    sync = per_call_ns(tracked(board_recorder(False)), calls)
    threaded = per_call_ns(tracked(board_recorder(True)), calls)
    print(f"begin/end, nothing published:          {bare:7.0f}")
    print(f"begin/end + board, sync/gevent:        {sync:7.0f}  (+{sync - bare:.0f})")
    print(f"begin/end + board, gthread lane:       {threaded:7.0f}  (+{threaded - bare:.0f})")


if __name__ == "__main__":
    main()
