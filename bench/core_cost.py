#!/usr/bin/env python3
"""What the HTTP core costs per request, in one process, without load noise.

    python bench/core_cost.py                 # Django hello (bench/benchproject)
    python bench/core_cost.py --app hello     # the plain WSGI hello
    python bench/core_cost.py --requests 20000 --rounds 5

Each variant serves the same GET, sent by the other end of a socketpair, in a loop, and the
CPU time per request is printed (the lowest of `--rounds`):

- `sockets`: the four socket calls alone (the client's send and recv, the server's recv and
  send), the floor under every variant;
- `lean`: a request loop with no policy at all (split the head, a minimal environ, the app,
  join its body, one send): what Python costs without validation or limits;
- `lean+request`: the lean loop with runprefork's request side (`parse_head`,
  `build_environ`);
- `lean+response`: the lean loop with runprefork's response side (`Response`: the head
  checked and built, framing, keep-alive);
- `core`: `HTTPConnection.handle_request`, the whole HTTP core of every worker class.

The differences between lines are the prices of the parts. They are far steadier than a
wrk run (a few percent between runs, where two wrk measurements of one server differ by
10%), so a change to the core can be judged here first, then with bench/ab.py. A part's
cost here is its cost on warm caches; inside a loaded server it can be higher
(docs/benchmarks.md). The worker's own loop (poller, timeout watch, metrics) is not in it.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from lean_loop import core_context, lean_environ, lean_response  # noqa: E402

from django_prefork.http.connection import HTTPConnection  # noqa: E402
from django_prefork.http.parser import parse_head  # noqa: E402
from django_prefork.http.response import Response  # noqa: E402
from django_prefork.http.wsgi import build_environ  # noqa: E402

REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 8000)


def load_app(name: str) -> Any:
    if name == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
        from benchproject.wsgi import application
    else:
        from benchproject.hello import application
    return application


def variants(app: Any, server: socket.socket) -> dict[str, Callable[[], Any]]:
    ctx = core_context(app, SERVER[1])
    conn = HTTPConnection(server, CLIENT, SERVER, ctx)
    canned = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!"

    def sockets() -> None:
        server.recv(65536)
        server.sendall(canned)

    def lean() -> None:
        head = server.recv(65536).partition(b"\r\n\r\n")[0]
        server.sendall(lean_response(app, lean_environ(head, SERVER[1], CLIENT)))

    def lean_request() -> None:
        head = parse_head(server.recv(65536), ctx.limits)
        environ = build_environ(ctx.base_environ | {"REMOTE_ADDR": CLIENT[0],
                                                    "REMOTE_PORT": str(CLIENT[1])},
                                head, io.BytesIO(), (), lambda: False, False)
        server.sendall(lean_response(app, environ))

    def lean_with_our_response() -> None:
        head = server.recv(65536).partition(b"\r\n\r\n")[0]
        response = Response(conn, False, True, True)
        result: Iterable[bytes] = app(lean_environ(head, SERVER[1], CLIENT),
                                      response.start_response)
        try:
            response.send_iterable(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return {"sockets": sockets, "lean": lean, "lean+request": lean_request,
            "lean+response": lean_with_our_response, "core": conn.handle_request}


def cost(serve: Callable[[], Any], client: socket.socket, requests: int) -> float:
    """CPU µs per request of `serve`, the client's two calls included."""
    started = time.process_time()
    for _ in range(requests):
        client.send(REQUEST)
        serve()
        if not client.recv(65536):
            raise RuntimeError("the server side closed the connection")
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=("django", "hello"), default="django")
    parser.add_argument("--requests", type=int, default=0,
                        help="per variant and round (default 8,000 Django, 50,000 hello)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests = args.requests or (8_000 if args.app == "django" else 50_000)
    app = load_app(args.app)
    server, client = socket.socketpair()
    table = variants(app, server)
    for serve in table.values():  # warm-up: imports, URL resolver, caches
        cost(serve, client, 200)
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, so a slow moment touches every variant
        for name, serve in table.items():
            best[name] = min(best.get(name, float("inf")), cost(serve, client, requests))
    lean = best["lean"]
    print(f"{args.app}: CPU µs per request, lowest of {args.rounds} rounds of {requests:,}")
    for name, value in best.items():
        extra = "" if name in ("sockets", "lean") else f"  (+{value - lean:.1f} over lean)"
        print(f"  {name:14} {value:7.1f}{extra}")


if __name__ == "__main__":
    main()
