"""Django integration end to end: deploy checks on real projects, logging through LOGGING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server import REPO_ROOT, TESTS_DIR, Server, wait_until

pytestmark = pytest.mark.integration


def manage(*args: str, env: dict[str, str] | None = None,
           settings: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
    # pytest-django exported the test project's settings; manage.py must use its own.
    full_env["DJANGO_SETTINGS_MODULE"] = "demo_project.settings"
    full_env.update(env or {})
    cmd = [sys.executable, str(REPO_ROOT / "manage.py"), *args]
    if settings:
        cmd.append(f"--settings={settings}")
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120,
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


def test_demo_project_deploy_check_has_no_prefork_warnings(tmp_path: Path):
    env = {"DJANGO_STATIC_ROOT": str(tmp_path / "static")}
    collected = manage("collectstatic", "--noinput", env=env)
    assert collected.returncode == 0, collected.stderr
    result = manage("check", "--deploy", env=env)
    assert result.returncode == 0, result.stderr
    assert "django_prefork." not in result.stdout + result.stderr


def test_demo_project_without_collectstatic_is_flagged(tmp_path: Path):
    env = {"DJANGO_STATIC_ROOT": str(tmp_path / "never-collected")}
    result = manage("check", "--deploy", env=env)
    assert "django_prefork.E002" in result.stdout + result.stderr


def test_broken_static_setup_warns_in_a_temp_project(tmp_path: Path):
    # DEBUG off, staticfiles installed, a local STATIC_URL, nothing to serve it.
    (tmp_path / "brokenstatic.py").write_text(
        "from testproject.settings import *\n"
        "MIDDLEWARE = ['django.middleware.security.SecurityMiddleware',\n"
        "              'django.middleware.common.CommonMiddleware']\n"
    )
    result = manage("check", "--deploy",
                    env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR),
                                                        str(REPO_ROOT)])},
                    settings="brokenstatic")
    output = result.stdout + result.stderr
    assert "django_prefork.W002" in output
    assert "HINT" in output


def _settings_with_logging(tmp_path: Path) -> Server:
    (tmp_path / "loggingsettings.py").write_text(
        "from testproject.settings import *\n"
        "LOGGING = {'version': 1, 'disable_existing_loggers': True,\n"
        "           'handlers': {'null': {'class': 'logging.NullHandler'}},\n"
        "           'root': {'handlers': ['null'], 'level': 'CRITICAL'}}\n"
    )
    access = tmp_path / "access.log"
    server = Server("--access-logfile", str(access), settings="loggingsettings")
    server.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), server.env["PYTHONPATH"]])
    return server


def test_logging_that_disables_existing_loggers_keeps_access_lines(tmp_path: Path):
    server = _settings_with_logging(tmp_path)
    access = tmp_path / "access.log"
    with server:
        server.start()
        assert server.get("/hello", headers={"User-Agent": "prefork-test"})[0] == 200
        wait_until(lambda: access.exists() and "prefork-test" in access.read_text(),
                   message="an access line despite disable_existing_loggers")
        line = access.read_text().splitlines()[-1]
        assert '"GET /hello HTTP/1.1" 200 12' in line


def test_usr1_reopens_log_files_after_rotation(tmp_path: Path):
    server = _settings_with_logging(tmp_path)
    access = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    with server:
        server.start()
        server.get("/hello?before")
        wait_until(lambda: access.exists() and "before" in access.read_text(),
                   message="the first access line")
        access.rename(rotated)
        mark = len(server.lines)
        server.signal(signal.SIGUSR1)
        server.wait_for_line("Handling signal: usr1", start=mark)

        attempt = 0

        def reopened() -> bool:
            # The worker reopens on its own USR1, a moment after the master: retry until a
            # request's line lands in the new file. Any attempt's line will do: a line is
            # written just after its response has gone out (and the connection closed), so
            # the client may look before its own line is there.
            nonlocal attempt
            attempt += 1
            server.get(f"/hello?after-{attempt}")
            return access.exists() and "after-" in access.read_text()

        wait_until(reopened, timeout=10, interval=0.2, message="a line in the new access.log")
        server.get("/hello?settled")
        wait_until(lambda: "settled" in access.read_text(), message="the next line")
    assert "settled" not in rotated.read_text()


@pytest.mark.parametrize("args", [
    ("--worker-class", "sync"),
    ("--worker-class", "gthread", "--threads", "2"),
    ("--worker-class", "gevent"),
    ("--worker-class", "sync", "--preload"),
    ("--worker-class", "gthread", "--threads", "2", "--preload"),
], ids=["sync", "gthread", "gevent", "sync-preload", "gthread-preload"])
def test_project_loggers_stay_enabled_in_the_workers(args: tuple[str, ...]):
    """LOGGING without disable_existing_loggers: an app's loggers must log in a worker.

    The master (or zygote) applied LOGGING once and imported the project; a second
    application in the worker would disable every logger that exists by then.
    """
    with Server(*args, settings="testproject.settings_logging") as server:
        server.start()
        status, _, body = server.get("/log?mark=visible-42")
        assert (status, body) == (200, b"logged visible-42")
        server.wait_for_line(r"PROJECT-LOG testproject\.views app visible-42", timeout=20)
        server.wait_for_line(r"PROJECT-LOG thirdparty thirdparty visible-42", timeout=20)


def test_project_loggers_stay_enabled_in_fresh_interpreter_workers():
    """The exec path (no zygote) sets Django up and then loads the WSGI module, too."""
    with Server("--worker-class", "sync", settings="testproject.settings_logging",
                env={"DJANGO_PREFORK_NO_ZYGOTE": "1"}) as server:
        server.start()
        (first,) = server.ready_workers()
        mark = len(server.lines)
        server.signal(signal.SIGHUP)  # after a HUP workers are fresh interpreters here
        wait_until(lambda: server.ready_workers() and first not in server.ready_workers(),
                   timeout=30, message="a fresh worker after HUP")

        def logged() -> bool:
            server.get("/log?mark=fresh-7")
            return any("PROJECT-LOG thirdparty thirdparty fresh-7" in line
                       for line in server.lines[mark:])

        wait_until(logged, timeout=30, interval=0.3, message="the third-party line after HUP")
        server.wait_for_line(r"PROJECT-LOG testproject\.views app fresh-7", start=mark)
