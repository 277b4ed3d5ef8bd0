"""The runprefork command: settings precedence, validation, banner, and the info flags."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from server import REPO_ROOT, TESTS_DIR, Server, running, wait_until

pytestmark = pytest.mark.integration


def run_command(*args: str, settings: str = "testproject.settings",
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
    for name in ("PORT", "WEB_CONCURRENCY"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "django", "runprefork", f"--settings={settings}", *args],
        capture_output=True, text=True, env=full_env, timeout=60, cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "settings", "expected"),
    [
        (["--workers", "0"], "testproject.settings", r"--workers 0 is invalid"),
        (["--workers", "many"], "testproject.settings", r"--workers 'many' is invalid|"
                                                        r"--workers many is invalid"),
        (["--bind", "127.0.0.1:99999"], "testproject.settings", r"--bind .*99999.*"),
        (["--timeout", "-1"], "testproject.settings", r"--timeout -1 is invalid"),
        (["--worker-class", "eventlet"], "testproject.settings", r"--worker-class .*eventlet"),
        ([], "testproject.settings_bad_prefork", r"unknown key 'WORKER'.*did you mean 'WORKERS'"),
    ],
    ids=["workers-zero", "workers-text", "port-range", "negative-timeout", "worker-class",
         "unknown-key"],
)
def test_bad_settings_give_one_line_and_exit_code(args, settings, expected):
    result = run_command(*args, settings=settings)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one clear line, no traceback
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert "Listening at" not in result.stdout  # nothing was bound


def test_precedence_default_prefork_env_cli():
    # PREFORK (settings_prefork) says WORKERS 2, TIMEOUT 17, KEEPALIVE 3.
    result = run_command("--print-config", "--keep-alive", "9",
                         settings="testproject.settings_prefork",
                         env={"WEB_CONCURRENCY": "4"})
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        match = re.match(r"\s*(\w+)\s*=\s*(.*?)\s+\((.+)\)\s*$", line)
        if match:
            values[match.group(1)] = (match.group(2), match.group(3))
    assert values["timeout"] == ("17", "PREFORK")
    assert values["workers"][0] == "4" and values["workers"][1] == "environment"
    assert values["keepalive"] == ("9", "command line")
    assert values["graceful_timeout"] == ("30", "default")


def test_check_config_loads_the_app():
    result = run_command("--check-config")
    assert result.returncode == 0, result.stderr
    assert "Configuration OK" in result.stdout
    broken = run_command("--check-config", settings="testproject.settings_broken_app")
    assert broken.returncode != 0
    assert "simulated import error" in broken.stderr


def test_a_missing_wsgi_application_is_named(tmp_path):
    """Django's own words (get_internal_wsgi_application), which we keep without importing
    runserver's server into every worker."""
    env = _settings_file(tmp_path, "nowsgi", "WSGI_APPLICATION = 'no_such_module.application'\n")
    result = run_command("--check-config", settings="nowsgi", env=env)
    assert result.returncode != 0
    assert ("WSGI application 'no_such_module.application' could not be loaded; "
            "Error importing module.") in result.stderr, result.stderr


def test_banner_names_versions_addresses_and_workers():
    import django

    with running("--workers", "2", wait_workers=2) as server:
        output = server.output
        assert f"Django {django.get_version()}" in output
        assert "'testproject.settings'" in output
        assert re.search(rf"Listening at: http://127\.0\.0\.1:{server.port} \(pid {server.pid}\)",
                         output)
        assert server.port != 0
        assert "Using worker: sync, 2 workers" in output


def test_addrport_positional_and_ipv6():
    server = Server("[::1]:0", bind=None)
    with server:
        server.start()
        assert server.host == "::1"
        assert server.get("/hello")[0] == 200


def test_unix_socket_bind(tmp_path):
    path = tmp_path / "prefork.sock"
    server = Server(bind=f"unix:{path}")
    with server:
        server.start()
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert data.endswith(b"Hello, world")
    assert not path.exists()  # removed at shutdown


def test_address_in_use_is_one_line():
    with running() as first:
        result = run_command("--bind", f"127.0.0.1:{first.port}")
    assert result.returncode != 0
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_call_command_rejects_bad_value():
    with pytest.raises(CommandError, match=r"WORKERS|--workers|workers"):
        call_command("runprefork", workers=0, skip_checks=True)


def test_call_command_print_config(capsys):
    call_command("runprefork", "--print-config", "--workers", "3")
    out = capsys.readouterr().out
    assert re.search(r"workers\s*=\s*3\s+\(command line\)", out)


def test_debug_true_is_warned_about_at_start_up(tmp_path):
    (tmp_path / "debugsettings.py").write_text("from testproject.settings import *\nDEBUG = True\n")
    result = run_command("--check-config", settings="debugsettings",
                         env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR),
                                                             str(REPO_ROOT)])})
    assert result.returncode == 0, result.stderr
    assert "django_prefork.W001" in result.stdout + result.stderr
    # `manage.py check` alone does not say it: only serving with DEBUG on is a problem.
    check = subprocess.run(
        [sys.executable, "-m", "django", "check", "--settings=debugsettings"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR),
                                                          str(REPO_ROOT)])},
    )
    assert "django_prefork.W001" not in check.stdout + check.stderr


def _inherited_listener() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


def _serve_on_fd3(extra_args: list[str], env: dict[str, str], sock: socket.socket) -> Server:
    """Start runprefork with sock as fd 3, as systemd or a supervisor would hand it over."""
    server = Server(*extra_args, bind=None)
    server.env.update(env)
    # LISTEN_PID must name the server process itself: a shell that execs it keeps its pid.
    server.cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *server.cmd]
    fd = sock.fileno()
    server.start(pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3))
    return server


def test_systemd_socket_activation():
    sock, port = _inherited_listener()
    with sock:
        server = _serve_on_fd3([], {"LISTEN_FDS": "1"}, sock)
        with server:
            assert server.port == port
            assert server.get("/hello")[0] == 200


def test_bind_to_an_inherited_fd():
    sock, port = _inherited_listener()
    with sock:
        server = _serve_on_fd3(["--bind", "fd://3"], {}, sock)
        with server:
            assert server.port == port
            assert server.get("/hello")[0] == 200


# --- start-up messages ----------------------------------------------------------------------

def _settings_file(tmp_path, name: str, body: str) -> dict[str, str]:
    """Write a settings module into tmp_path; return the env that makes it importable."""
    (tmp_path / f"{name}.py").write_text("from testproject.settings import *\n" + body)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR), str(REPO_ROOT)])}


def test_checks_run_once_with_one_summary(tmp_path):
    # Nothing serves STATIC_URL: W002 must be in the one and only summary.
    env = _settings_file(tmp_path, "nostatic", "MIDDLEWARE = "
                         "['django.middleware.security.SecurityMiddleware']\n")
    server = Server(settings="nostatic", env=env)
    with server:
        server.start()
        output = server.output
    summaries = [line for line in output.splitlines() if "System check identified" in line]
    assert summaries == ["System check identified some issues:",
                         "System check identified 1 issue (0 silenced)."], output
    assert output.count("django_prefork.W002") == 1
    assert "pip install whitenoise" in output
    assert "no issues" not in output


def test_check_config_reports_every_problem(tmp_path):
    env = _settings_file(tmp_path, "manyproblems",
                         "PREFORK = {'WORKERS': 0, 'TIMOUT': 5}\n"
                         "MIDDLEWARE = ['django.middleware.security.SecurityMiddleware']\n")
    env["WEB_CONCURRENCY"] = "lots"
    result = run_command("--check-config", "--keep-alive", "-1", "--pid",
                         str(tmp_path / "missing" / "x.pid"), settings="manyproblems", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for expected in (r"PREFORK\['WORKERS'\] = 0 is invalid", r"unknown key 'TIMOUT'",
                     r"WEB_CONCURRENCY='lots' is invalid", r"--keep-alive -1 is invalid",
                     r"django_prefork\.W002", r"--pid \(PIDFILE\) .*missing.*does not exist"):
        assert re.search(expected, output), f"{expected!r} not in:\n{output}"
    assert output.count("'WORKERS'] = 0 is invalid") == 1  # E001 only, not twice
    assert "Traceback" not in output
    assert "Configuration OK" not in output
    # Without --check-config the first problem is one line that says there are more.
    result = run_command("--keep-alive", "-1", settings="manyproblems", env=env)
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "more problems: --check-config lists them all" in line


def _live_pidfile(tmp_path) -> str:
    path = tmp_path / "live.pid"
    path.write_text(f"{os.getpid()}\n")  # this test process: certainly running
    return str(path)


@pytest.mark.parametrize(("make_args", "expected"), [
    (lambda p: ["--pid", str(p / "no" / "such" / "dir" / "x.pid")],
     r"--pid \(PIDFILE\) '.*/no/such/dir/x\.pid': the directory .* does not exist"),
    (lambda p: ["--pid", _live_pidfile(p)],
     rf"--pid \(PIDFILE\) '.*live\.pid' names process {os.getpid()}, which is running"),
    (lambda p: ["--error-logfile", "/nonexistent/d/error.log"],
     r"--error-logfile \(ERRORLOG\) '/nonexistent/d/error\.log' cannot be opened"),
    (lambda p: ["--access-logfile", "/nonexistent/d/access.log"],
     r"--access-logfile \(ACCESSLOG\) '/nonexistent/d/access\.log' cannot be opened"),
    (lambda p: ["--access-logfile", str(p)],
     r"--access-logfile \(ACCESSLOG\) .* cannot be opened: it is a directory"),
], ids=["pidfile-dir-missing", "pidfile-live-process", "errorlog", "accesslog", "log-is-dir"])
def test_startup_errors_are_one_line(tmp_path, make_args, expected):
    result = run_command(*make_args(tmp_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "Listening at" not in result.stdout + result.stderr  # nothing was bound


def test_listening_at_goes_to_the_error_log(tmp_path):
    error_log = tmp_path / "error.log"
    server = Server("--error-logfile", str(error_log))
    with server:
        server.start(wait_workers=None)
        wait_until(lambda: error_log.exists() and "Booted worker" in error_log.read_text(),
                   timeout=30, message="the worker's boot in the error log")
        match = re.search(r"\[INFO\] Listening at: http://127\.0\.0\.1:(\d+) "
                          rf"\(pid {server.pid}\)", error_log.read_text())
        assert match, error_log.read_text()
        server.port = int(match.group(1))
        assert server.get("/hello")[0] == 200
        assert "Listening at" not in server.output  # stdout has the banner's other lines
        assert "Using worker: sync" in server.output


def test_access_log_on_a_full_disk_is_reported_once():
    with running("--access-logfile", "/dev/full") as server:
        for _ in range(40):
            assert server.get("/hello")[0] == 200
        server.wait_for_line(r"cannot write the access log /dev/full: No space left on device")
        output = server.output
    assert output.count("cannot write the access log") == 1, output
    assert "Logging error" not in output
    assert "Traceback" not in output


def test_start_up_checks_see_the_command_line(tmp_path):
    env = _settings_file(tmp_path, "persistentdb",
                         "DATABASES = {'default': {**DATABASES['default'], 'CONN_MAX_AGE': 60}}\n")
    result = run_command("--check-config", "--worker-class", "gevent", settings="persistentdb",
                         env=env)
    assert result.returncode == 0, result.stderr
    assert "django_prefork.W010" in result.stdout + result.stderr
    plain = run_command("--check-config", settings="persistentdb", env=env)
    assert "django_prefork.W010" not in plain.stdout + plain.stderr


def test_check_config_reports_logging_problems(tmp_path):
    """The log configuration files and the syslog socket are tried too, as a start would."""
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_command("--check-config", "--log-config-json", str(broken), "--log-syslog",
                         "--log-syslog-to", f"unix://{tmp_path / 'no-syslog.sock'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for expected in (r"ERROR: --log-config-json \(LOGCONFIG_JSON\) .*broken\.json",
                     r"ERROR: --log-syslog-to \(SYSLOG_ADDR\) .*no-syslog\.sock"):
        assert re.search(expected, output), f"{expected!r} not in:\n{output}"
    assert "Configuration OK" not in output
