"""TLS end to end on every worker class: a self-signed certificate made here with openssl,
stdlib `ssl` clients against `runprefork`."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from server import Server
from testproject.views import pattern

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

WORKER_CLASSES = ["sync", "gthread", "gevent"]


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def https(server: Server, cert: Path, timeout: float = 30) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(server.host, server.port, timeout=timeout,
                                       context=client_context(cert))


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def tls_server(request, certificate):
    cert, key = certificate
    with Server("--workers", "1", "--worker-class", request.param, "--threads", "2",
                "--certfile", str(cert), "--keyfile", str(key)) as server:
        server.start()
        server.worker_class = request.param
        yield server


def test_get_is_secure_in_django(tls_server, certificate):
    conn = https(tls_server, certificate[0])
    conn.request("GET", "/environ")
    response = conn.getresponse()
    environ = json.loads(response.read())
    assert response.status == 200
    assert environ["is_secure"] is True
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTPS"] == "on"
    conn.close()


def test_post_with_a_body(tls_server, certificate):
    body = pattern(300_000)
    conn = https(tls_server, certificate[0])
    conn.request("POST", "/echo", body=body, headers={"Content-Type": "application/x-test"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == body
    conn.close()


def test_keep_alive(tls_server, certificate):
    conn = https(tls_server, certificate[0])
    conn.request("GET", "/hello")
    first = conn.getresponse()
    assert first.read() == b"Hello, world"
    sock = conn.sock
    conn.request("GET", "/hello")
    second = conn.getresponse()
    assert second.read() == b"Hello, world"
    if tls_server.worker_class != "sync":  # sync answers Connection: close, as gunicorn's
        assert first.getheader("Connection") != "close"
        assert conn.sock is sock  # the same TLS connection carried both
    conn.close()


def test_file_response_is_not_sent_with_sendfile(tls_server, certificate):
    conn = https(tls_server, certificate[0])
    conn.request("GET", "/file?size=2000000")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == pattern(2_000_000)  # sendfile would send plaintext: garbage
    conn.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_silent_client_does_not_block_others(worker_class, certificate):
    """A client that opens TCP and never sends its ClientHello is dropped after
    header_timeout; meanwhile (gthread, gevent) or right after (sync, one worker) a normal
    TLS client is served."""
    cert, key = certificate
    with Server("--workers", "1", "--worker-class", worker_class, "--threads", "1",
                "--header-timeout", "2", "--certfile", str(cert), "--keyfile", str(key)
                ) as server:
        server.start()
        silent = socket.create_connection((server.host, server.port), timeout=30)
        try:
            time.sleep(0.2)  # let the worker take the silent one first (sync: it is stuck)
            started = time.monotonic()
            conn = https(server, cert, timeout=30)
            conn.request("GET", "/hello")
            assert conn.getresponse().read() == b"Hello, world"
            waited = time.monotonic() - started
            conn.close()
            if worker_class != "sync":
                # not held up by the silent client (its 2 s header_timeout): served at once
                assert waited < 2.0, waited
            assert silent.recv(100) == b""  # the server closed it (no answer to a non-request)
            assert time.monotonic() - started < 20
        finally:
            silent.close()


def test_bad_certificate_is_one_line_and_an_exit(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    server = Server("--certfile", str(bogus))
    server.start(wait_workers=None)
    assert server.proc is not None
    code = server.proc.wait(timeout=60)
    assert code != 0
    output = "\n".join(server.lines)
    assert "--certfile (CERTFILE)" in output and str(bogus) in output, output
    assert "Traceback" not in output


def test_missing_key_file(tmp_path, certificate):
    server = Server("--certfile", str(certificate[0]), "--keyfile", str(tmp_path / "no.key"))
    server.start(wait_workers=None)
    assert server.proc is not None
    assert server.proc.wait(timeout=60) != 0
    assert "KEYFILE" in "\n".join(server.lines)


def test_ssl_context_hook(certificate):
    cert, key = certificate
    with Server("--workers", "1", "--certfile", str(cert), "--keyfile", str(key),
                settings="testproject.settings_tls") as server:
        server.start()
        tls12 = client_context(cert)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        conn = http.client.HTTPSConnection(server.host, server.port, timeout=30, context=tls12)
        with pytest.raises(ssl.SSLError):
            conn.request("GET", "/hello")
        conn.close()
        conn = https(server, cert)
        conn.request("GET", "/hello")
        assert conn.sock.version() == "TLSv1.3"
        assert conn.getresponse().read() == b"Hello, world"
        conn.close()


def served_certificate(server: Server, ca: Path) -> bytes:
    context = client_context(ca)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate changes under the test
    with socket.create_connection((server.host, server.port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_hup_rereads_the_certificate(worker_class, tmp_path):
    from server import wait_until

    cert, key = make_certificate(tmp_path, "live")
    with Server("--workers", "1", "--worker-class", worker_class,
                "--certfile", str(cert), "--keyfile", str(key)) as server:
        server.start()
        first = served_certificate(server, cert)
        (worker,) = server.ready_workers()
        new_cert, new_key = make_certificate(tmp_path, "renewed")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        server.signal(signal.SIGHUP)
        wait_until(lambda: server.ready_workers() and worker not in server.ready_workers(),
                   timeout=30, message="a new worker after HUP")
        renewed = served_certificate(server, cert)
        assert renewed != first
        assert renewed == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_hup_with_a_bad_certificate_keeps_serving(tmp_path):
    cert, key = make_certificate(tmp_path, "live")
    with Server("--workers", "1", "--certfile", str(cert), "--keyfile", str(key)) as server:
        server.start()
        first = served_certificate(server, cert)
        (worker,) = server.ready_workers()
        good = cert.read_text()
        cert.write_text("not a certificate\n")
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        line = server.wait_for_line(r"Reload aborted.*CERTFILE", timeout=30, start=mark)
        assert str(cert) in line.string
        cert.write_text(good)  # (the check above is what kept the old worker)
        assert server.ready_workers() == [worker]
        assert served_certificate(server, cert) == first


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_partial_head_over_tls_gets_408(worker_class, certificate):
    cert, key = certificate
    with Server("--workers", "1", "--worker-class", worker_class, "--header-timeout", "2",
                "--certfile", str(cert), "--keyfile", str(key)) as server:
        server.start()
        with socket.create_connection((server.host, server.port), timeout=30) as raw, \
                client_context(cert).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # and never the end
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 "), reply
