"""The HTTP conformance corpus through a real `runprefork`, for every worker class.

One server per worker class (and per extra settings a few cases need), started lazily and
kept for the module; every case of tests/http/corpus/ is sent over a fresh TCP connection
and what comes back is checked strictly (tests/http/corpus_cases.py). A short fuzz run
then checks that the server survives garbage.
"""

from __future__ import annotations

import importlib.util
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django_prefork.conf.registry import SETTINGS_BY_NAME
from server import REPO_ROOT, Server

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "corpus_cases", Path(__file__).parent / "http" / "corpus_cases.py")
corpus = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules.setdefault("corpus_cases", corpus)
_spec.loader.exec_module(corpus)  # type: ignore[union-attr]

CASES = corpus.load_cases()
WORKERS = ("sync", "gthread", "gevent")


def _absent_reason(name: str) -> str | None:
    """Why a worker class cannot be tested here (None: it can): imported in a subprocess,
    so this process never imports gevent."""
    code = ("from django_prefork.workers import worker_class_for\n"
            f"worker_class_for({name!r})\n")
    try:
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True,
                       capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        return f"worker class {name!r} absent or not importable: {' '.join(last)}"
    return None


_ABSENT = {name: _absent_reason(name) for name in WORKERS}


def _flags(settings: dict) -> list[str]:
    args = []
    for name, value in sorted(settings.items()):
        args += [SETTINGS_BY_NAME[name].flag, str(value)]
    return args


class Servers:
    """Lazily started servers keyed by (worker class, settings); all stopped at the end."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], Server] = {}

    def get(self, worker: str, settings: dict) -> Server:
        key = (worker, repr(sorted(settings.items())))
        srv = self.running.get(key)
        if srv is None:
            srv = Server("--worker-class", worker, "--workers", "1", "--timeout", "30",
                         *_flags(settings))
            self.running[key] = srv
            srv.start(wait_workers=1)
        return srv

    def stop(self) -> None:
        for srv in self.running.values():
            srv.stop()


@pytest.fixture(scope="module")
def servers():
    pool = Servers()
    try:
        yield pool
    finally:
        pool.stop()


def exchange(srv: Server, data: bytes, shutdown: bool = True, timeout: float = 8.0) -> bytes:
    """Send raw bytes over a new connection, read until the server closes."""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shutdown:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before everything was sent
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                pytest.fail(f"the server kept the connection open over {timeout}s")
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _params():
    for worker in WORKERS:
        marks = [pytest.mark.skip(reason=_ABSENT[worker])] if _ABSENT[worker] else []
        for case in CASES:
            yield pytest.param(worker, case, id=f"{worker}-{case.name}", marks=marks)


@pytest.mark.parametrize(("worker", "case"), list(_params()))
def test_case(servers, worker, case):
    srv = servers.get(worker, case.all_settings)
    raw = exchange(srv, case.raw, shutdown=case.shutdown)
    corpus.check_case(case, raw, keepalive=worker != "sync")
    assert srv.proc is not None and srv.proc.poll() is None


# -- a brief fuzz run against a live server ---------------------------------------------

def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = rng.choice([b"\r", b"\n", b"\0", b" ", b"\r\n", b"\t", b":"])
        elif op == 2 and buf:
            end = min(len(buf), pos + rng.randint(1, 16))
            buf[pos:pos] = buf[pos:end]
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf = buf[: max(1, pos)]
    return bytes(buf)


@pytest.mark.parametrize("worker", ["sync"])
def test_fuzz_live_server_survives(servers, worker):
    """A few hundred mutated corpus requests: every answer well-formed, the server alive."""
    srv = servers.get(worker, corpus.BASE_SETTINGS)
    seeds = [c.raw for c in CASES if c.shutdown and len(c.raw) < 2000]
    rng = random.Random(1234)
    pid = srv.ready_workers()
    deadline = time.monotonic() + 60
    for _ in range(300):
        data = _mutate(rng, rng.choice(seeds))
        raw = exchange(srv, data)
        try:
            corpus.parse_responses(raw, [data.lstrip(b"\r\n").startswith(b"HEAD ")])
        except AssertionError as exc:
            raise AssertionError(f"malformed answer to {data!r}: {exc}") from None
        if time.monotonic() > deadline:
            break
    assert srv.proc is not None and srv.proc.poll() is None
    assert srv.ready_workers() == pid, "the worker was replaced (it crashed or hung)"
    assert "Traceback" not in srv.output, srv.output[-3000:]
