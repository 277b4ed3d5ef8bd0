#!/usr/bin/env python3
"""Request loops without runprefork's policy: the floors bench/run.py measures as ceilings.

    python bench/lean_loop.py MODE PORT WORKERS MODULE
    # MODE: python, core, c, gevent-python or gevent-c

Each worker is a keep-alive epoll loop in one thread, forked after the app is loaded, on one
listening socket. What serves a request that has arrived:

- `python`: plain Python with no policy at all: split the head, a minimal environ, the app,
  one send (about what any Python server must do);
- `core`: runprefork's HTTP core (`HTTPConnection.handle_request`) with none of its worker
  (no poller policy, timeout watch, metrics or load board);
- `c`: `lean_core.c`, the request's head, environ and response in C (a measuring probe with
  few checks), compiled here on first use with the running interpreter's headers;
- `gevent-python`, `gevent-c`: `python` and `c` with gevent's patches and a greenlet per
  connection, which waits in gevent's hub for its next request, as the gevent worker does
  (`gevent-c` sends without waiting: a response larger than the socket's buffer is cut).

With bjoern (a C loop) they split runprefork's cost per request into what Python costs,
what our HTTP core costs and what our worker costs (docs/benchmarks.md, 2026-12-03). They
are measuring tools, never servers to use: a malformed request just closes its connection,
and there are no limits or timeouts.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
EMPTY_INPUT = io.BytesIO(b"")


def build_c_core() -> ModuleType:
    """lean_core.c as a module, built once per source and interpreter in the temp folder."""
    source = BENCH_DIR / "lean_core.c"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    digest = hashlib.sha256(source.read_bytes() + suffix.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"prefork-lean-core-{digest}" / f"probecore{suffix}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        include = sysconfig.get_paths()["include"]
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", f"-I{include}", str(source), "-o",
                        str(target)], check=True)
    spec = importlib.util.spec_from_file_location("probecore", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lean_environ(head: bytes, port: int, addr: Any) -> dict[str, Any]:
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ")
    path, _, query = target.decode("latin-1").partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.decode("ascii"), "SCRIPT_NAME": "", "PATH_INFO": path,
        "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": addr[0], "REMOTE_PORT": str(addr[1]),
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": EMPTY_INPUT,
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }  # fmt: skip
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        environ[key] = value.strip().decode("latin-1")
    return environ


def lean_response(app: Any, environ: dict[str, Any]) -> bytes:
    """The app's response as bytes, with no checks: its head as the app gave it."""
    got: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got[:] = [status, headers]

    result = app(environ, start_response)
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    head = [f"HTTP/1.1 {got[0]}\r\nContent-Length: {len(body)}\r\n"]
    head += [f"{k}: {v}\r\n" for k, v in got[1] if k.lower() != "content-length"]
    return "".join([*head, "\r\n"]).encode("latin-1") + body


def python_server(app: Any, port: int) -> Callable[[socket.socket, Any], Callable[[], bool]]:
    """Per connection, a function serving its next request; False: close it."""

    def connection(sock: socket.socket, addr: Any) -> Callable[[], bool]:
        def serve() -> bool:
            data = sock.recv(65536)
            if not data:
                return False
            head = data.partition(b"\r\n\r\n")[0]
            sock.sendall(lean_response(app, lean_environ(head, port, addr)))
            return True

        return serve

    return connection


def core_context(app: Any, port: int) -> Any:
    """The HTTP core's ServerContext with runprefork's default limits and no worker parts
    (no timeout watch, metrics, hooks or access log): also bench/core_cost.py's."""
    from django_prefork.http.connection import ServerContext
    from django_prefork.http.settings import CoreSettings

    settings = CoreSettings(
        limit_request_line=4094, limit_request_fields=100, limit_request_field_size=8190,
        limit_request_body=0, header_timeout=10.0, header_map="drop",
        forwarded_allow_ips=("127.0.0.1",), secure_scheme_headers=(),
    )  # fmt: skip
    return ServerContext(app, settings, keepalive=True, recv_first=True,
                         base_environ={"SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port)})


def core_server(app: Any, port: int) -> Callable[[socket.socket, Any], Callable[[], bool]]:
    from django_prefork.http.connection import HTTPConnection

    ctx = core_context(app, port)

    def connection(sock: socket.socket, addr: Any) -> Callable[[], bool]:
        return HTTPConnection(sock, addr, ("127.0.0.1", port), ctx).handle_request

    return connection


def c_server(app: Any, port: int) -> Callable[[socket.socket, Any], Callable[[], bool]]:
    serve_c = build_c_core().serve
    base = {"SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}

    def connection(sock: socket.socket, addr: Any) -> Callable[[], bool]:
        fd = sock.fileno()
        environ = dict(base, REMOTE_ADDR=addr[0], REMOTE_PORT=str(addr[1]))

        def serve() -> bool:
            keep: bool = serve_c(fd, app, environ, EMPTY_INPUT)
            return keep

        return serve

    return connection


SERVERS = {"python": python_server, "core": core_server, "c": c_server}


def gevent_worker_loop(listener_fd: int,
                       connection: Callable[[socket.socket, Any], Callable[[], bool]]) -> None:
    """A greenlet per connection; waiting (accept, the next request) is gevent's."""
    import gevent
    import gevent.socket

    listener = gevent.socket.socket(fileno=listener_fd)

    def handle(sock: Any, addr: Any) -> None:
        serve = connection(sock, addr)
        fd = sock.fileno()
        try:
            while True:
                gevent.socket.wait_read(fd)
                if not serve():
                    break
        except (OSError, ValueError):
            pass
        finally:
            sock.close()

    while True:
        sock, addr = listener.accept()
        gevent.spawn(handle, sock, addr)
        gevent.sleep(0)  # one connection per turn, as the gevent worker


def worker_loop(listener: socket.socket,
                connection: Callable[[socket.socket, Any], Callable[[], bool]]) -> None:
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    served: dict[int, tuple[socket.socket, Callable[[], bool]]] = {}
    while True:
        for fd, _events in epoll.poll():
            if fd == listener.fileno():
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    continue  # the other worker took it
                sock.setblocking(True)
                served[sock.fileno()] = (sock, connection(sock, addr))
                epoll.register(sock.fileno(), select.EPOLLIN)
                continue
            sock, serve = served[fd]
            try:
                keep = serve()
            except (OSError, ValueError):
                keep = False
            if not keep:
                epoll.unregister(fd)
                del served[fd]
                sock.close()


def run_forked(workers: int, worker: Callable[[], None], banner: str) -> None:
    """Fork `workers` processes running `worker`; TERM or INT stops and reaps them all.
    Never returns (bench/bjoern_serve.py uses it too)."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            worker()
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(banner, flush=True)
    while True:
        signal.pause()


def app_of(module: str) -> Any:
    return importlib.import_module(module).application


def main() -> None:
    mode, port, workers, module = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    greenlets = mode.startswith("gevent-")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    if not greenlets:  # loaded once and forked
        connection = SERVERS[mode](app_of(module), port)

    def worker() -> None:
        if greenlets:  # patched before the app is imported, as the gevent worker does
            from gevent import monkey

            monkey.patch_all()
            gevent_worker_loop(listener.detach(),
                               SERVERS[mode.removeprefix("gevent-")](app_of(module), port))
        else:
            worker_loop(listener, connection)

    run_forked(workers, worker, f"lean loop ({mode}): {workers} workers on 127.0.0.1:{port}")


if __name__ == "__main__":
    main()
