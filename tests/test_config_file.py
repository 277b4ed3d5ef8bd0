"""`-c gunicorn.conf.py`, GUNICORN_CMD_ARGS, and their place in the precedence order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_prefork.conf import Config, ConfigError, load_config, load_config_collecting
from server import REPO_ROOT, TESTS_DIR, Server, children_of, wait_until

FIXTURES = TESTS_DIR / "fixtures"
GUNICORN_CONF = str(FIXTURES / "gunicorn.conf.py")


def write(tmp_path: Path, text: str, name: str = "gunicorn.conf.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- loading (in process) -------------------------------------------------------------------
def test_file_values_are_read_as_gunicorn_reads_them():
    cfg = load_config(cli={"config": GUNICORN_CONF})
    assert cfg.workers == 3
    assert cfg.timeout == 45
    assert cfg.keepalive == 5  # text, converted as gunicorn's validators do
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert cfg.raw_env == ["CONF_TEST_FROM_FILE=yes"]
    assert cfg.source("workers") == "config file"
    assert cfg.source("config") == "command line"
    assert cfg.source("backlog") == "default"


def test_precedence_default_prefork_file_environment_cli():
    prefork = {"WORKERS": 9, "TIMEOUT": 9, "KEEPALIVE": 9, "BACKLOG": 99,
               "CONFIG": GUNICORN_CONF}
    environ = {"WEB_CONCURRENCY": "4", "GUNICORN_CMD_ARGS": "--timeout 50 --keep-alive 6"}
    cfg = load_config(prefork=prefork, environ=environ, cli={"keepalive": "7"})
    assert (cfg.backlog, cfg.source("backlog")) == (99, "PREFORK")  # not in the file
    assert (cfg.workers, cfg.source("workers")) == (4, "environment")  # over the file's 3
    assert (cfg.timeout, cfg.source("timeout")) == (50, "environment")
    assert (cfg.keepalive, cfg.source("keepalive")) == (7, "command line")
    assert cfg.source("config") == "PREFORK"
    assert cfg.max_requests == 0 and cfg.source("max_requests") == "default"


def test_the_highest_layer_names_the_file(tmp_path):
    other = write(tmp_path, "workers = 5\n")
    cfg = load_config(prefork={"CONFIG": GUNICORN_CONF},
                      environ={"GUNICORN_CMD_ARGS": f"-c {other}"})
    assert cfg.workers == 5 and cfg.config == other
    cfg = load_config(prefork={"CONFIG": GUNICORN_CONF},
                      environ={"GUNICORN_CMD_ARGS": f"--config {other}"},
                      cli={"config": GUNICORN_CONF})
    assert cfg.workers == 3 and cfg.config == GUNICORN_CONF


def test_hooks_are_kept_not_called(tmp_path):
    path = write(tmp_path, "calls = []\n"
                           "def post_fork(server, worker):\n    raise SystemExit('called')\n"
                           "def nworkers_changed(server, new, old):\n    pass\n"
                           "def on_exit(*args):\n    pass\n")
    # calls is not a setting: the file must name it _calls (checked below); here it is not
    with pytest.raises(ConfigError, match="'calls'"):
        load_config(cli={"config": path})
    path = write(tmp_path, "def post_fork(server, worker):\n    raise SystemExit('called')\n"
                           "def nworkers_changed(server, new, old):\n    pass\n"
                           "def on_exit(*args):\n    pass\n")
    cfg = load_config(cli={"config": path})
    assert sorted(cfg.hooks) == ["nworkers_changed", "on_exit", "post_fork"]
    assert cfg.hooks["post_fork"].__name__ == "post_fork"
    assert cfg.replace(workers=2).hooks.keys() == cfg.hooks.keys()
    # A fresh interpreter rebuilds the Config from JSON and re-reads the hooks from the file.
    rebuilt = Config.from_json(json.loads(json.dumps(cfg.to_json())))
    assert sorted(rebuilt.hooks) == sorted(cfg.hooks)
    assert load_config().hooks == {}


def test_imports_and_underscore_names_are_skipped_and_wsgi_app_is_a_note():
    cfg = load_config(cli={"config": GUNICORN_CONF})  # imports multiprocessing, os, environ
    assert any("wsgi_app is ignored" in note and "WSGI_APPLICATION" in note
               for note in cfg.notes)
    assert sorted(cfg.hooks) == ["post_fork", "worker_exit"]
    assert not any("not called yet" in note for note in cfg.notes)  # they are called now


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workerz = 3\n", r"'workerz' is not a setting: did you mean 'workers'\?"),
        ("def post_frok(server, worker):\n    pass\n", r"did you mean 'post_fork'\?"),
        ("tmp_upload_dir = '/tmp'\n",
         r"'tmp_upload_dir' is a gunicorn setting django-prefork does not support"),
        ("cores = 4\n", r"'cores' is not a setting.*named _cores"),
        ("def post_fork(server):\n    pass\n", r"hook post_fork must accept 2 positional"),
        ("when_ready = 3\n", r"hook when_ready = 3 is not callable"),
        ("timeout = 'soon'\n", r": timeout = 'soon' is invalid: .*Fix: set timeout to"),
        ("workers = 2\nraise RuntimeError('no database url')\n",
         r"could not be read: RuntimeError: no database url\. Fix"),
        ("workers = = 2\n", r"could not be read \(line 1\): SyntaxError"),
        ("config = 'other.py'\n", r"'config' cannot name another file"),
    ],
    ids=["typo", "hook-typo", "not-yet", "helper-variable", "hook-arity", "hook-not-callable",
         "bad-value", "raises", "syntax", "nested-config"],
)
def test_file_mistakes_are_one_line_naming_the_file(tmp_path, text, expected):
    import re

    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(cli={"config": path})
    message = str(info.value)
    assert "\n" not in message
    assert path in message
    assert re.search(expected, message), message


def test_a_missing_file_is_one_line(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match=r"config file .*nope\.py does not exist"):
        load_config(cli={"config": missing})
    cfg, errors = load_config_collecting(prefork={"CONFIG": missing, "WORKERS": 2})
    assert len(errors) == 1 and cfg.workers == 2  # the rest of the configuration stands


# -- GUNICORN_CMD_ARGS ------------------------------------------------------------------------
def test_gunicorn_cmd_args_takes_gunicorn_flags():
    environ = {"GUNICORN_CMD_ARGS": "-w 4 -t 60 --limit-request-field_size 1000 "
                                    "--log-file /tmp/x.log -e A=1 --env 'B=two words' "
                                    "--no-sendfile --pythonpath /srv/a,/srv/b"}
    cfg = load_config(environ=environ)
    assert (cfg.workers, cfg.timeout, cfg.limit_request_field_size) == (4, 60, 1000)
    assert cfg.errorlog == "/tmp/x.log"
    assert cfg.raw_env == ["A=1", "B=two words"]
    assert cfg.sendfile is False
    assert cfg.pythonpath == ["/srv/a", "/srv/b"]
    assert cfg.source("workers") == "environment"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--workers 0", r"^GUNICORN_CMD_ARGS: --workers 0 is invalid: .*in GUNICORN_CMD_ARGS"),
        ("--wrokers 3", r"GUNICORN_CMD_ARGS=.* is invalid: unrecognized arguments: --wrokers"),
        ("--timeout", r"GUNICORN_CMD_ARGS=.* is invalid: argument -t/--timeout: expected"),
        ("--bind 'x", r"GUNICORN_CMD_ARGS=.* is invalid: No closing quotation"),
    ],
    ids=["bad-value", "unknown-flag", "missing-value", "bad-quoting"],
)
def test_gunicorn_cmd_args_mistakes_are_one_line(text, expected):
    import re

    with pytest.raises(ConfigError) as info:
        load_config(environ={"GUNICORN_CMD_ARGS": text})
    assert re.search(expected, str(info.value)), str(info.value)
    assert info.value.source == "environment"


# -- through manage.py runprefork ---------------------------------------------------------------
def run_command(*args: str, settings: str = "fixtures.conf_settings",
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
    for name in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "SENDFILE"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "django", "runprefork", f"--settings={settings}", *args],
        capture_output=True, text=True, env=full_env, timeout=60, cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


def _print_config_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" = ")
        rows[name.strip()] = rest
    return rows


@pytest.mark.integration
def test_print_config_shows_the_config_file_as_a_source():
    result = run_command("-c", GUNICORN_CONF, "--print-config",
                         env={"GUNICORN_CMD_ARGS": "--timeout 50"})
    assert result.returncode == 0, result.stderr
    rows = _print_config_rows(result.stdout)
    assert rows["workers"].split() == ["3", "(config", "file)"]
    assert rows["timeout"].split() == ["50", "(environment)"]
    assert rows["config"].split()[-2:] == ["(command", "line)"]
    assert "wsgi_app is ignored" in result.stderr


@pytest.mark.integration
def test_prefork_config_names_the_file():
    result = run_command("--print-config", settings="fixtures.conf_settings_prefork")
    assert result.returncode == 0, result.stderr
    rows = _print_config_rows(result.stdout)
    assert rows["workers"].split() == ["3", "(config", "file)"]  # the file beats PREFORK
    assert rows["graceful_timeout"].split() == ["7", "(PREFORK)"]
    assert rows["config"].endswith("(PREFORK)")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("bad_name.conf.py", r"'workerz' is not a setting: did you mean 'workers'\?"),
        ("raises.conf.py", r"raises\.conf\.py could not be read: RuntimeError: no database"),
        ("bad_hook.conf.py", r"hook post_fork must accept 2 positional arguments"),
        ("bad_value.conf.py", r"timeout = 'soon' is invalid"),
        ("missing.conf.py", r"missing\.conf\.py does not exist"),
    ],
)
def test_a_bad_file_stops_start_up_with_one_line(fixture, expected):
    import re

    result = run_command("-c", str(FIXTURES / fixture), "--bind", "127.0.0.1:0")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "Listening at" not in result.stdout + result.stderr

    checked = run_command("-c", str(FIXTURES / fixture), "--check-config")
    assert checked.returncode == 2
    assert re.search(expected, checked.stderr), checked.stderr
    assert "Traceback" not in checked.stderr


@pytest.mark.integration
def test_check_config_accepts_the_gunicorn_file():
    result = run_command("-c", GUNICORN_CONF, "--check-config")
    assert result.returncode == 0, result.stderr
    assert "Configuration OK." in result.stdout


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


@pytest.mark.integration
def test_a_real_server_runs_the_file():
    """workers = 3 gives three workers; raw_env and proc_name reach the processes."""
    server = Server("-c", GUNICORN_CONF, settings="fixtures.conf_settings",
                    env={"CONF_PROC_NAME": "confapp-e2e"})
    with server:
        server.start(wait_workers=3)
        wait_until(lambda: len(server.worker_pids()) == 3, timeout=30,
                   message="three workers")
        assert "wsgi_app is ignored" in server.output
        status, _, body = server.get("/process")
        assert status == 200
        assert json.loads(body)["env"] == {"CONF_TEST_FROM_FILE": "yes"}
        assert _cmdline(server.pid).startswith("confapp-e2e: master")
        for pid in server.worker_pids():
            assert _cmdline(pid).startswith("confapp-e2e: worker"), _cmdline(pid)
        assert set(server.worker_pids()) <= set(children_of(server.pid))


def test_migrating_md_accounts_for_every_gunicorn_setting():
    from django_prefork.conf.configfile import GUNICORN_SETTINGS, HOOK_ARITY

    text = (REPO_ROOT / "docs" / "migrating.md").read_text()
    table = text[text.index("## Every gunicorn setting"):text.index("## Out of scope")]
    missing = sorted(name for name in [*GUNICORN_SETTINGS, *HOOK_ARITY]
                     if f"`{name}`" not in table)
    assert not missing, f"docs/migrating.md does not list {missing}"
