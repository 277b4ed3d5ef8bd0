"""The demo project behind a real nginx: unix socket modes, trusted forwarded headers,
WhiteNoise's cache headers, 50 MB each way, and failover when an instance is SIGKILLed."""

from __future__ import annotations

import grp
import gzip
import hashlib
import json
import os
import re
import stat

import pytest
from deploykit import Load, fetch, kill_tree, pattern_sha256, served_ids, wait_served

from server import wait_until

pytestmark = pytest.mark.integration

FIFTY_MB = 50 * 1024 * 1024


def _json(response: tuple[int, dict[str, str], bytes]) -> dict:
    status, _, body = response
    assert status == 200, body[:500]
    return json.loads(body)


def test_each_instance_serves_through_nginx(site):
    for upstream, instance in (("only_unix", site.unix), ("only_tcp", site.tcp)):
        info = _json(site.nginx.get("/api/info/", upstream=upstream))
        assert info["pid"] in instance.server.worker_pids()
    # the shared upstream and nginx's own unix socket listener
    assert site.nginx.get("/health/")[2] == b"ok"
    assert fetch(site.nginx.unix_connection(), "GET", "/health/")[2] == b"ok"


def test_unix_socket_mode_decides_whether_nginx_workers_connect(site):
    if site.nginx.identity is None:
        pytest.skip("needs root, to run nginx's workers as www-data and the instances in its "
                    "group")
    group = site.nginx.identity[1]
    shared = os.stat(site.unix.bind.removeprefix("unix:"))
    private = os.stat(site.private.bind.removeprefix("unix:"))
    gid = grp.getgrnam(group).gr_gid
    assert (stat.S_IMODE(shared.st_mode), shared.st_gid) == (0o660, gid)
    assert (stat.S_IMODE(private.st_mode), private.st_gid) == (0o600, gid)
    # nginx's workers (www-data) connect through the group with --umask 0o117 ...
    assert site.nginx.get("/health/", upstream="only_unix")[0] == 200
    # ... and get "Permission denied", answered 502, when the mode leaves the group out.
    status, _, _ = site.nginx.get("/health/", upstream="only_private")
    assert status == 502
    wait_until(lambda: "Permission denied" in site.nginx.log_tail(), timeout=10,
               message="nginx to log the permission error")


@pytest.mark.parametrize("upstream", ["only_unix", "only_tcp"])
def test_forwarded_client_address_and_scheme_are_trusted(site, upstream):
    # 127.0.0.2 is loopback too, but not nginx's address: it must come back as the client's.
    info = _json(site.nginx.get("/api/client/", upstream=upstream, source="127.0.0.2",
                                headers={"X-Forwarded-For": "203.0.113.9",
                                         "X-Forwarded-Proto": "https"}))
    assert info["client_addr"] == "127.0.0.2"
    assert info["remote_addr"] == ("" if upstream == "only_unix" else "127.0.0.1")
    assert info["x_forwarded_for"] == "203.0.113.9, 127.0.0.2"  # nginx appended the peer
    # plain HTTP at nginx: its X-Forwarded-Proto replaced the client's forged "https"
    assert info["is_secure"] is False
    assert info["wsgi_url_scheme"] == "http"


def test_https_at_nginx_is_https_in_django(site):
    if site.nginx.certificate is None:
        pytest.skip("openssl is not installed: no certificate for nginx's TLS listener")
    conn = site.nginx.tls_connection()
    info = _json(fetch(conn, "GET", "/api/client/"))
    assert info["is_secure"] is True
    assert info["scheme"] == "https"
    # runprefork trusted nginx's header too (forwarded_allow_ips / unix peer)
    assert info["wsgi_url_scheme"] == "https"
    assert info["client_addr"] == "127.0.0.1"


def test_static_files_through_whitenoise_with_cache_headers(site):
    manifest = json.loads((site.directory / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["css/site.css"]
    assert re.fullmatch(r"css/site\.[0-9a-f]{12}\.css", hashed)
    original = (site.directory / "static" / "css" / "site.css").read_bytes()

    status, headers, body = site.nginx.get(f"/static/{hashed}")
    assert status == 200 and body == original
    assert "immutable" in headers["cache-control"]
    assert "max-age=315360000" in headers["cache-control"]  # forever: the name changes
    assert "accept-encoding" in headers.get("vary", "").lower()

    status, headers, body = site.nginx.get("/static/css/site.css")
    assert status == 200 and body == original
    assert "immutable" not in headers["cache-control"]  # unhashed: may change, short life
    assert re.search(r"max-age=60\b", headers["cache-control"])

    status, headers, body = site.nginx.get(f"/static/{hashed}",
                                           headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert gzip.decompress(body) == original


def test_fifty_megabytes_up_and_down(site):
    chunk = hashlib.shake_256(b"upload").digest(64 * 1024)
    expected = hashlib.sha256()

    def body():
        sent = 0
        while sent < FIFTY_MB:
            piece = chunk[: FIFTY_MB - sent]
            expected.update(piece)
            sent += len(piece)
            yield piece

    conn = site.nginx.connection(timeout=120)
    result = _json(fetch(conn, "POST", "/upload/", body=body(),
                         headers={"Content-Length": str(FIFTY_MB),
                                  "Content-Type": "application/octet-stream"}))
    assert result == {"bytes": FIFTY_MB, "sha256": expected.hexdigest(),
                      "pid": result["pid"]}

    conn = site.nginx.connection(timeout=120)
    conn.request("GET", f"/download/?bytes={FIFTY_MB}&seed=deploy")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") == str(FIFTY_MB)
    got = hashlib.sha256()
    size = 0
    while piece := resp.read(1024 * 1024):
        got.update(piece)
        size += len(piece)
    conn.close()
    assert size == FIFTY_MB
    assert got.hexdigest() == pattern_sha256("deploy", FIFTY_MB)


def test_failover_when_an_instance_is_killed(site):
    """SIGKILL one instance's master and workers under load: nginx moves to the other with
    no failed request, and the instance serves again once it is started again."""
    victim, survivor = site.unix, site.tcp
    load = Load(site.nginx.connection).start()
    try:
        load.wait_for(100)
        wait_served(victim)  # both instances take traffic before the crash
        wait_served(survivor)
        killed = kill_tree(victim.server.pid)
        assert len(killed) >= 3  # the master and its two workers at least
        socket_path = victim.bind.removeprefix("unix:")
        assert os.path.exists(socket_path)  # a crash leaves the socket file behind

        mark = len(load.ok)
        load.wait_for(200)
        survivor_pids = set(survivor.server.worker_pids())
        after = load.since(mark)
        assert all(load.pids[r] in survivor_pids for r in after[50:]), \
            "requests after the crash must be served by the surviving instance"

        victim.start()  # the stale socket file is replaced
        assert os.path.exists(socket_path)
        assert victim.starts == 2
        wait_served(victim, minimum=20, timeout=60)  # back in nginx's rotation
        load.wait_for(100)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    assert len(load.ok) == len(load.sent)
    # every answer came from an instance's log, but for the few a SIGKILL may have caught
    # between sending the response and writing its access-log line
    served = {*served_ids(survivor.access_lines()),
              *served_ids(victim.access_lines(1)), *served_ids(victim.access_lines(2))}
    assert len(set(load.ok) - served) <= load.threads
