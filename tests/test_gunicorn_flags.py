"""gunicorn's command-line spellings, and the process/HTTP settings they reach, for real."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from django_prefork.conf import ConfigError, load_config
from server import REPO_ROOT, TESTS_DIR, running

FIXTURES = TESTS_DIR / "fixtures"
SETTINGS = "fixtures.conf_settings"

pytestmark = pytest.mark.integration


def run_command(*args: str, env: dict[str, str] | None = None,
                cwd: str | os.PathLike[str] = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
    for name in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "SENDFILE"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "django", "runprefork", f"--settings={SETTINGS}", *args],
        capture_output=True, text=True, env=full_env, timeout=60, cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(" = ")
        rows[name.strip()] = rest.rsplit("(", 1)[0].strip()
    return rows


def test_gunicorn_spellings_on_the_command_line(tmp_path):
    rows = printed(run_command(
        "-b", "127.0.0.1:8123", "-w", "2", "-k", "gthread", "-t", "40", "-p",
        str(tmp_path / "app.pid"), "-n", "shop", "-m", "0o117", "-e", "A=1", "--env", "B=2",
        "--limit-request-field_size", "1000", "--log-file", "-", "--keep-alive", "4",
        "--no-sendfile", "--reuse-port", "--chdir", str(tmp_path),
        "--forwarder-headers", "SCRIPT_NAME", "--print-config",
    ))
    assert rows["bind"] == "['127.0.0.1:8123']"
    assert (rows["workers"], rows["worker_class"], rows["timeout"]) == ("2", "'gthread'", "40")
    assert rows["pidfile"] == repr(str(tmp_path / "app.pid"))
    assert (rows["proc_name"], rows["umask"]) == ("'shop'", str(0o117))
    assert rows["raw_env"] == "['A=1', 'B=2']"
    assert rows["limit_request_field_size"] == "1000"
    assert rows["errorlog"] == "'-'"
    assert (rows["sendfile"], rows["reuse_port"]) == ("False", "True")
    assert rows["chdir"] == repr(str(tmp_path))
    assert rows["forwarder_headers"] == "['SCRIPT_NAME']"


def test_django_pythonpath_flag_serves_as_gunicorns():
    """Django's own --pythonpath (one directory, applied before settings load) is ours."""
    rows = printed(run_command("--pythonpath", str(FIXTURES / "extra_path"),
                               "--print-config"))
    assert rows["pythonpath"] == repr([str(FIXTURES / "extra_path")])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-e", "NOEQUALS"], r"--env NOEQUALS is invalid: .*Fix: pass --env KEY=VALUE"),
        (["--chdir", "/no/such/dir"], r"--chdir /no/such/dir is invalid: .* not an existing"),
        (["--forwarder-headers", "X-Script-Name"], r"--forwarder-headers .*not a header name"),
    ],
    ids=["raw-env", "chdir", "forwarder-headers"],
)
def test_bad_values_are_one_line(args, expected):
    result = run_command(*args, "--bind", "127.0.0.1:0")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]


def test_raw_env_chdir_and_pythonpath_reach_the_workers(tmp_path):
    extra = str(FIXTURES / "extra_path")
    with running("-e", "CONF_TEST_A=1", "--env", "CONF_TEST_B=x=y", "--chdir", str(tmp_path),
                 f"--pythonpath={extra},{tmp_path}", "--workers", "2",
                 settings=SETTINGS, wait_workers=2) as server:
        for _ in range(4):  # more than one worker answers
            status, _, body = server.get("/process")
            assert status == 200
            data = json.loads(body)
            assert data["env"] == {"CONF_TEST_A": "1", "CONF_TEST_B": "x=y"}
            assert data["cwd"] == str(tmp_path)
            assert data["sys_path_head"][:2] == [extra, str(tmp_path)]
            assert data["marker"] == "from pythonpath"


def test_raw_env_reaches_fresh_interpreter_workers(tmp_path):
    """gevent workers start as fresh interpreters (a zygote): they inherit it too."""
    pytest.importorskip("gevent")
    extra = str(FIXTURES / "extra_path")
    with running("-e", "CONF_TEST_G=1", "-k", "gevent", "--chdir", str(tmp_path),
                 f"--pythonpath={extra}", settings=SETTINGS) as server:
        data = json.loads(server.get("/process")[2])
        assert data["env"] == {"CONF_TEST_G": "1"}
        assert data["cwd"] == str(tmp_path)
        assert data["marker"] == "from pythonpath"


def _bind_again(port: int, reuse_port: bool) -> int:
    """0 if another socket may bind the server's port now, else the errno."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        return 0
    except OSError as exc:
        return exc.errno or -1
    finally:
        sock.close()


def test_reuse_port_lets_a_second_listener_bind():
    with running("--reuse-port", settings=SETTINGS) as server:
        assert _bind_again(server.port, reuse_port=True) == 0
        assert server.get("/hello")[0] == 200
    with running(settings=SETTINGS) as server:
        assert _bind_again(server.port, reuse_port=True) == errno.EADDRINUSE


def test_no_sendfile_switches_the_core_off_and_files_still_arrive():
    from django_prefork.http.connection import HTTPConnection, ServerContext
    from django_prefork.http.settings import CoreSettings

    def can_sendfile(**cli: object) -> bool:
        ctx = ServerContext(app=lambda e, s: [], settings=CoreSettings.from_config(
            load_config(cli=cli)))
        a, b = socket.socketpair()
        with a, b:
            return HTTPConnection(a, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx).can_sendfile

    assert can_sendfile() is True
    assert can_sendfile(sendfile=False) is False
    assert load_config(environ={"SENDFILE": "0"}).sendfile is False  # gunicorn's variable

    for args in ((), ("--no-sendfile",)):
        with running(*args, settings=SETTINGS) as server:
            status, _, body = server.get("/file?size=300000")
            assert status == 200 and len(body) == 300000


def _environ_via(server, headers: dict[str, str], path: str = "/app/environ"):
    status, _, body = server.get(path, headers=headers)
    return status, (json.loads(body) if status == 200 else None)


def test_forwarder_headers_from_a_trusted_proxy():
    with running(settings=SETTINGS) as server:  # 127.0.0.1 is trusted by default
        status, data = _environ_via(server, {"SCRIPT_NAME": "/app/"})
        assert status == 200
        assert (data["SCRIPT_NAME"], data["PATH_INFO"]) == ("/app", "/environ")
        # PATH_INFO from the proxy wins over the path of the request line.
        status, data = _environ_via(server, {"PATH_INFO": "/environ"}, path="/elsewhere")
        assert status == 200 and data["PATH_INFO"] == "/environ"
        # Only whole segments: SCRIPT_NAME /app does not own /application.
        status, data = _environ_via(server, {"SCRIPT_NAME": "/env"}, path="/environ")
        assert status == 200 and data["SCRIPT_NAME"] == "/env" and data["PATH_INFO"] == (
            "/environ")

    with running("--forwarder-headers", "", settings=SETTINGS) as server:
        status, _ = _environ_via(server, {"SCRIPT_NAME": "/app"})
        assert status == 404  # not honoured: /app/environ is not a URL of the project


def test_forwarder_headers_are_ignored_from_an_untrusted_peer():
    with running("--forwarded-allow-ips", "10.9.9.9", settings=SETTINGS) as server:
        status, _ = _environ_via(server, {"SCRIPT_NAME": "/app"})
        assert status == 404
        status, data = _environ_via(server, {"SCRIPT_NAME": "/app"}, path="/environ")
        assert status == 200 and data["SCRIPT_NAME"] == "" and "HTTP_SCRIPT_NAME" not in (
            data["headers"])


def test_forwarder_header_names_are_validated():
    with pytest.raises(ConfigError, match=r"PREFORK\['FORWARDER_HEADERS'\]"):
        load_config(prefork={"FORWARDER_HEADERS": ["X-Script-Name"]})
    assert load_config(prefork={"FORWARDER_HEADERS": "script_name, remote_user"}
                       ).forwarder_headers == ["SCRIPT_NAME", "REMOTE_USER"]


def _raw_status_and_environ(server, head: bytes) -> tuple[int, dict | None]:
    response = server.raw(head)
    status = int(response.split(b" ", 2)[1])
    body = response.partition(b"\r\n\r\n")[2]
    return status, (json.loads(body) if status == 200 else None)


LENIENT_REQUESTS = {
    "casefold_http_method": b"get /environ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "permit_obsolete_folding": (b"GET /environ HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n"
                                b"  two\r\nConnection: close\r\n\r\n"),
    "strip_header_spaces": (b"GET /environ HTTP/1.1\r\nHost: a\r\nX-Spaced \t: v\r\n"
                            b"Connection: close\r\n\r\n"),
}


def test_http_leniencies_are_off_by_default_and_work_when_on():
    with running(settings=SETTINGS) as server:
        for head in LENIENT_REQUESTS.values():
            assert _raw_status_and_environ(server, head)[0] == 400, head
    with running("--casefold-http-method", "--permit-obsolete-folding",
                 "--strip-header-spaces", settings=SETTINGS) as server:
        status, data = _raw_status_and_environ(server, LENIENT_REQUESTS["casefold_http_method"])
        assert status == 200 and data["REQUEST_METHOD"] == "GET"
        status, data = _raw_status_and_environ(server,
                                               LENIENT_REQUESTS["permit_obsolete_folding"])
        assert status == 200 and data["headers"]["HTTP_X_FOLDED"] == "one two"
        status, data = _raw_status_and_environ(server, LENIENT_REQUESTS["strip_header_spaces"])
        assert status == 200 and data["headers"]["HTTP_X_SPACED"] == "v"
        # A folded first field line is still refused (RFC 9112 §2.2).
        assert _raw_status_and_environ(
            server, b"GET /environ HTTP/1.1\r\n X: a\r\nHost: a\r\n\r\n")[0] == 400
