"""The in-process reference: the benchmark's app called in a loop, with no server at all.

It gives the CPU seconds the *application* spends per request, so bench/run.py can show
which share of the server's CPU per request went into the app (the rest is server overhead).
Run by bench/run.py in a fresh interpreter per app, with the same PYTHONPATH and settings as
the servers:

    python bench/inprocess.py --settings benchproject.settings --module benchproject.wsgi \
        --path /hello --seconds 1

Prints one JSON line: {"cpu_per_req": seconds, "requests": n}.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time
from typing import Any


class StubFileWrapper:
    """`wsgi.file_wrapper` that only records the file: a server would sendfile() it, which is
    server work, so the reference must not read the file in Python."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None:
        self.filelike.close()


def make_environ(path: str, method: str, body: bytes) -> dict[str, Any]:
    """The smallest environ wrk's requests would produce (Host header only, plus the body)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": StubFileWrapper,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    return environ


def call_once(app: Any, path: str, method: str, body: bytes) -> int:
    """One request through the app; the body is consumed as a server would. Returns status."""
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(s)
        return lambda data: None

    result = app(make_environ(path, method, body), start_response)
    try:
        for _chunk in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0][:3]) if status else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True)
    parser.add_argument("--module", required=True, help="module holding `application`")
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-size", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU-time budget")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--gevent", action="store_true",
                        help="patch the standard library first, as a gevent worker does")
    parser.add_argument("--no-sleep", action="store_true",
                        help="make time.sleep a no-op (for the 50 ms view, see below)")
    args = parser.parse_args()
    if args.gevent:
        # Before Django is imported, as both servers' gevent workers do: the app then runs
        # on gevent's threading.local, locks and sockets, which are part of its own cost.
        from gevent import monkey

        monkey.patch_all()
    if args.no_sleep:
        # Waiting costs no CPU, but a process woken after each 50 ms sleep runs on cold caches
        # (and, in a VM, a descheduled vCPU): measured that way the view "costs" 4x its warm
        # CPU. A loaded server never idles between requests, so the warm figure is the fair one.
        time.sleep = lambda seconds: None

    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    app = importlib.import_module(args.module).application
    body = b"x" * args.body_size
    # Warm up: first calls import views, build the URL resolver, fill caches.
    for _ in range(20):
        code = call_once(app, args.path, args.method, body)
    if not 200 <= code < 300:
        sys.exit(f"{args.path}: status {code} in-process")
    n = 0
    wall_limit = time.monotonic() + max(5.0, args.seconds * 5)  # sleeping views: few calls
    cpu_start = time.process_time()
    cpu_end = cpu_start + args.seconds
    while n < args.max_requests:
        call_once(app, args.path, args.method, body)
        n += 1
        if n % 10 == 0 and (time.process_time() >= cpu_end or time.monotonic() > wall_limit):
            break
    cpu = time.process_time() - cpu_start
    print(json.dumps({"cpu_per_req": cpu / n, "requests": n}))


if __name__ == "__main__":
    main()
