"""What every worker class shares (workers/accept.py, drain.py, the class table), tested on
each class over real sockets: EMFILE on accept, and the backlog drain on TERM."""

from __future__ import annotations

import ast
import resource
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from test_gthread import read_response

from server import REPO_ROOT, Server, wait_until

WORKERS_DIR = REPO_ROOT / "django_prefork" / "workers"
CLASS_MODULES = {"sync", "gthread", "ggevent"}
CLASS_ARGS = {
    "sync": ("--worker-class", "sync"),
    "gthread": ("--worker-class", "gthread", "--threads", "4"),
    "gevent": ("--worker-class", "gevent"),
}


# -- the package's shape --------------------------------------------------------------------

def _imported_modules(path: Path) -> set[str]:
    """Every django_prefork.workers.* module a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "django_prefork.workers":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("django_prefork.workers."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("django_prefork.workers."):
                    found.add(alias.name.rsplit(".", 1)[1])
    return found


@pytest.mark.parametrize("module", sorted(CLASS_MODULES | {"base"}))
def test_no_worker_module_imports_a_worker_class(module: str):
    imported = _imported_modules(WORKERS_DIR / f"{module}.py")
    assert imported & CLASS_MODULES == set(), f"{module}.py imports {imported & CLASS_MODULES}"


def test_the_table_gives_each_class_by_name():
    from django_prefork.conf import load_config
    from django_prefork.workers import WORKER_CLASSES, worker_class_for
    from django_prefork.workers.base import Worker

    assert set(WORKER_CLASSES) == {"sync", "gthread", "gevent"}
    for name in ("sync", "gthread"):
        assert issubclass(worker_class_for(name), Worker)
    assert worker_class_for("sync", load_config(prefork={}, environ={}, cli={"threads": 2})) \
        is worker_class_for("gthread")
    with pytest.raises(ValueError, match="unknown worker class 'tornado'"):
        worker_class_for("tornado")


GEVENT_WITHOUT_EPOLL = """
import select
for name in [n for n in dir(select) if n.startswith(("epoll", "EPOLL"))]:
    delattr(select, name)
from django_prefork.workers import worker_class_for
assert worker_class_for("gevent").__name__ == "GeventWorker"
print("ok")
"""


def test_the_gevent_worker_imports_where_there_is_no_epoll():
    pytest.importorskip("gevent")
    out = subprocess.run([sys.executable, "-c", GEVENT_WITHOUT_EPOLL], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


# -- helpers --------------------------------------------------------------------------------

def start(worker: str, *args: str, **popen: Any) -> Server:
    if worker == "gevent":
        pytest.importorskip("gevent")
    return Server("--workers", "1", *CLASS_ARGS[worker], *args).start(**popen)


def get_in_threads(server: Server, paths: list[str], timeout: float = 60.0) -> list[Any]:
    """One connection and one GET per path, all at once; (status, body) or the exception."""
    results: list[Any] = [None] * len(paths)

    def one(i: int) -> None:
        try:
            status, _, body = server.get(paths[i], timeout=timeout)
            results[i] = (status, body)
        except Exception as exc:  # reported by the caller's assertion
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return results


# -- EMFILE on accept -------------------------------------------------------------------------

def _low_fd_limit() -> None:
    """preexec_fn: a low RLIMIT_NOFILE for the server and all it starts."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))


@pytest.mark.integration
@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_worker_out_of_descriptors_keeps_serving(worker: str, tmp_path: Path):
    """accept() fails with EMFILE while the worker has no descriptor left: the clients wait
    in the queue, the worker lives, logs it once, and serves them when descriptors free."""
    mark = tmp_path / "mark"
    server = start(worker, preexec_fn=_low_fd_limit)
    try:
        pid = server.get("/pid")[2]
        server.get(f"/exhaust_fds?hold=2&mark={mark}")
        wait_until(lambda: mark.exists() and mark.read_bytes() == b"exhausted", timeout=20,
                   message="the worker to run out of descriptors")
        results = get_in_threads(server, ["/pid"] * 6)
        assert results == [(200, pid)] * 6, results
        # Logged by the worker as accept() works again; its line may reach our reader of the
        # server's output after the responses reach the clients.
        server.wait_for_line(r"accept\(\) on .* works again", timeout=15)
        assert server.output.count("failed: [Errno 24] Too many open files") == 1, \
            server.output
        assert "Exception in worker process" not in server.output
        assert "was sent" not in server.output and "exited with code" not in server.output
    finally:
        server.stop()


# -- the backlog drain on TERM ---------------------------------------------------------------

def queue_requests(server: Server, count: int, path: str = "/hello") -> list[socket.socket]:
    """`count` connections that have sent a whole request (Connection: close) and wait."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((server.host, server.port), timeout=60)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        socks.append(sock)
    return socks


def answers(socks: list[socket.socket]) -> list[Any]:
    """Each connection's (status, body), or the exception reading it."""
    results: list[Any] = [None] * len(socks)

    def one(i: int) -> None:
        try:
            status, _, body = read_response(socks[i].makefile("rb"))
            results[i] = (status, body)
        except Exception as exc:  # reported by the caller's assertion
            results[i] = exc
        finally:
            socks[i].close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(socks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(70)
    return results


def check_term_serves_the_backlog(worker: str, busy: int, queued: int, *args: str,
                                  tmp_path: Path) -> None:
    """`busy` slow requests fill the worker; `queued` more connections wait in the kernel's
    accept queue; TERM: every one of them is answered, then the server exits 0."""
    server = start(worker, "--graceful-timeout", "60", *args)
    try:
        marks = [tmp_path / f"busy{i}" for i in range(busy)]
        slow: list[socket.socket] = []
        for mark in marks:
            slow += queue_requests(server, 1, f"/sleep?s=2&mark={mark}")
        wait_until(lambda: sum(m.exists() for m in marks) >= min(busy, 4), timeout=20,
                   message="the slow requests to run")
        waiting = queue_requests(server, queued)  # (connected: in the kernel's queue)
        server.signal(signal.SIGTERM)
        got = answers(slow + waiting)
        assert server.wait_exit(timeout=60) == 0
        failed = [r for r in got if not isinstance(r, tuple) or r[0] != 200]
        assert failed == [], f"{len(failed)} of {len(got)} not answered: {failed[:5]}"
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_term_serves_every_queued_connection(worker: str, tmp_path: Path):
    check_term_serves_the_backlog(worker, 1, 30, tmp_path=tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_term_at_worker_connections_serves_the_backlog(worker: str, tmp_path: Path):
    """Issue 15.3: at `worker_connections` the drain keeps its listener and takes the queue
    as room frees (before: 0 of 200 answered with --worker-connections 5)."""
    check_term_serves_the_backlog(worker, 5, 200, "--worker-connections", "5",
                                  tmp_path=tmp_path)
