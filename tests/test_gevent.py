"""The gevent worker over real sockets, and the W010 check.

The behavioural checks are shared with the gthread worker (test_gthread.py); what is
gevent's own: thousands of connections per worker, and one DB connection per greenlet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import override_settings
from test_gthread import (
    check_concurrency,
    check_connections_spread,
    check_hup_drains,
    check_keepalive_reuse,
    check_keepalive_timeout,
    check_max_requests_drains,
    check_pipelining,
    check_slowloris,
    check_term_drains,
    check_ttou_drains,
    check_worker_connections,
    concurrent_gets,
)

from server import running

pytest.importorskip("gevent")

integration = pytest.mark.integration

GEVENT = ("--worker-class", "gevent")


@integration
def test_gevent_runs_requests_concurrently():
    # 200 connections in one worker: ~100 ms of sleeping in all (20 s serially).
    check_concurrency((*GEVENT, "--worker-connections", "250"), limit=5.0)


@integration
def test_gevent_each_greenlet_has_its_own_db_connection(tmp_path: Path):
    db = tmp_path / "db.sqlite3"
    with running("--workers", "1", *GEVENT, env={"TESTPROJECT_DB": str(db)}) as server:
        (worker,) = server.ready_workers()
        results, elapsed = concurrent_gets(server, "/db_connection?s=0.5", 30)
        errors = [r for r in results if not isinstance(r, tuple) or r[0] != 200]
        assert errors == []
        data = [json.loads(r[2]) for r in results]
        assert {d["pid"] for d in data} == {worker}
        assert {d["name"] for d in data} == {str(db)}
        assert all(d["row"] == 1 for d in data)
        # The 30 cursors were all held at the same time (0.5 s each, 15 s serially), so
        # equal ids would mean a shared connection.
        assert elapsed < 5
        assert len({d["connection"] for d in data}) == 30
        assert len({d["wrapper"] for d in data}) == 30
        assert len({d["thread"] for d in data}) == 30
        assert "Error" not in server.output


@integration
def test_gevent_environ_is_multithread():
    with running("--workers", "1", *GEVENT) as server:
        environ = json.loads(server.get("/environ")[2])
        assert environ["wsgi.multithread"] is True
        assert environ["wsgi.multiprocess"] is True


@integration
def test_gevent_serves_new_connections_in_greenlets_used_before():
    """Each Connection: close request is a new connection; its greenlet is one that served
    an earlier connection (workers/greenlets.py), not a new one each time."""
    with running("--workers", "1", *GEVENT) as server:
        runs = [int(server.request("GET", "/__wsgi__/greenlet",
                                   headers={"Connection": "close"})[2]) for _ in range(10)]
    assert runs[-1] >= 5, runs


@integration
def test_gevent_keepalive_reuses_the_connection():
    check_keepalive_reuse(GEVENT)


@integration
def test_gevent_pipelined_requests_in_order():
    check_pipelining(GEVENT)


@integration
def test_gevent_idle_keepalive_connection_closed_after_timeout():
    check_keepalive_timeout(GEVENT)


@integration
def test_gevent_keepalive_zero_closes_after_each_response():
    with running("--workers", "1", *GEVENT, "--keep-alive", "0") as server:
        assert server.get("/hello")[1]["connection"] == "close"


@integration
def test_gevent_worker_connections_pauses_accepting():
    check_worker_connections(GEVENT)


@integration
def test_gevent_slowloris_does_not_block_others():
    check_slowloris(GEVENT)


@integration
def test_gevent_term_drains_without_failures():
    check_term_drains(GEVENT)


@integration
def test_gevent_hup_drains_without_failures():
    check_hup_drains(GEVENT)


@integration
def test_gevent_ttou_drains_without_failures():
    check_ttou_drains(GEVENT)


@integration
def test_gevent_max_requests_drains_without_failures():
    check_max_requests_drains(GEVENT)


@integration
def test_gevent_ignores_preload():
    with running("--workers", "1", *GEVENT, "--preload") as server:
        assert "--preload is ignored with the gevent worker class" in server.output
        assert server.get("/hello")[0] == 200


# -- W010: gevent with persistent database connections --------------------------------------

# The check only reads settings.DATABASES; no connection is opened with the overridden value.
quiet_db_override = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")

def _w010(prefork: object, databases: dict) -> list:
    from django_prefork.checks import check_gevent_persistent_connections

    with override_settings(PREFORK=prefork, DATABASES=databases):
        return check_gevent_persistent_connections()


SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


@quiet_db_override
@pytest.mark.parametrize("max_age", [60, None])
def test_w010_warns_for_gevent_with_persistent_connections(max_age):
    databases = {"default": SQLITE, "other": {**SQLITE, "CONN_MAX_AGE": max_age}}
    (message,) = _w010({"WORKER_CLASS": "gevent"}, databases)
    assert message.id == "django_prefork.W010"
    assert "DATABASES['other']" in message.msg
    assert f"CONN_MAX_AGE = {max_age!r}" in message.msg
    assert message.hint.endswith("docs/checks.md#w010")


@quiet_db_override
@pytest.mark.parametrize("prefork, databases", [
    ({"WORKER_CLASS": "gevent"}, {"default": SQLITE}),
    ({"WORKER_CLASS": "gevent"}, {"default": {**SQLITE, "CONN_MAX_AGE": 0}}),
    ({"WORKER_CLASS": "gthread"}, {"default": {**SQLITE, "CONN_MAX_AGE": 60}}),
    ({}, {"default": {**SQLITE, "CONN_MAX_AGE": None}}),
    (None, {"default": {**SQLITE, "CONN_MAX_AGE": None}}),
])
def test_w010_silent_otherwise(prefork, databases):
    assert _w010(prefork, databases) == []


@quiet_db_override
def test_w010_is_registered_with_the_ordinary_checks():
    from django.core import checks

    with override_settings(PREFORK={"WORKER_CLASS": "gevent"},
                           DATABASES={"default": {**SQLITE, "CONN_MAX_AGE": 30}}):
        messages = checks.run_checks(tags=["prefork_settings"])
    assert [m.id for m in messages] == ["django_prefork.W010"]


@integration
def test_gevent_spreads_connections_over_workers():
    check_connections_spread(GEVENT)



def test_gevent_sends_a_file_with_the_kernel_to_a_slow_reader():
    """FileResponse through wsgi.file_wrapper: os.sendfile on the cooperative socket, waiting
    in the hub whenever the socket buffer is full (the client reads late), over keep-alive."""
    import hashlib
    import socket
    import time

    from testproject.views import pattern

    size = 8 * 1024 * 1024
    with running("--workers", "1", *GEVENT) as server, \
            socket.create_connection((server.host, server.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(f"GET /file?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.3)  # the server fills the socket buffer and must wait
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert f"Content-Length: {size}".encode() in head
            while len(body) < size:
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed mid-file"
                body += chunk
            assert len(body) == size
            assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(size)).digest()


COOPERATIVE_SENDFILE_CHECK = r"""
import hashlib, os, tempfile
import gevent, gevent.socket
from django_prefork.workers import ggevent

calls = []
real_sendfile = os.sendfile
def counting_sendfile(*args):
    calls.append(args[3])
    return real_sendfile(*args)
ggevent.os.sendfile = counting_sendfile

data = os.urandom(6 * 1024 * 1024)
with tempfile.TemporaryFile() as f:
    f.write(data)
    a, b = gevent.socket.socketpair()
    a.settimeout(10)
    got = []
    def reader():
        gevent.sleep(0.2)  # late: the sender must wait for room
        n = 0
        while n < len(data) - 1000:
            chunk = b.recv(1 << 20)
            got.append(chunk)
            n += len(chunk)
    r = gevent.spawn(reader)
    sent = ggevent.cooperative_sendfile(a, f, 1000, len(data) - 1000)
    r.join(10)
    assert sent == len(data) - 1000, sent
    assert b"".join(got) == data[1000:]
    assert f.tell() == len(data)
    assert len(calls) >= 2, calls  # several kernel sends, waiting for room between them
print("ok", len(calls))
"""


def test_cooperative_sendfile_is_zero_copy_and_waits_for_room():
    """Run apart (this process never imports gevent's hub): the file goes out by os.sendfile
    calls on the non-blocking socket, with waits in the hub when it is full."""
    import subprocess
    import sys

    from server import REPO_ROOT

    out = subprocess.run([sys.executable, "-c", COOPERATIVE_SENDFILE_CHECK], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr
