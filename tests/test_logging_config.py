"""logconfig, logconfig_json and logconfig_dict: merged after the project's LOGGING.

Unit tests of django_prefork.logging/logconfig, then the settings through a real
``manage.py runprefork``.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from test_logging import NAMES, clean_loggers, make_cfg  # noqa: F401 - the fixture

from django_prefork import logging as plog
from django_prefork.conf import ConfigError, load_config

APP_LOGGER = "tests.logconfig.app"


@pytest.fixture(autouse=True)
def clean_app_logger():
    logger = logging.getLogger(APP_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate, logger.disabled = saved[2], saved[3]


def cfg_with(**kwargs):
    base = {"logconfig": None, "logconfig_json": None, "logconfig_dict": {}}
    base.update(kwargs)
    return make_cfg(**base)


def file_dict(path, logger=APP_LOGGER, fmt="DICT %(message)s", **logger_conf):
    return {
        "formatters": {"f": {"format": fmt}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path),
                              "formatter": "f"}},
        "loggers": {logger: {"handlers": ["file"], "level": "INFO", **logger_conf}},
    }


def test_dict_routes_the_loggers_it_names_and_disables_none(tmp_path):
    bystander = logging.getLogger("tests.logconfig.bystander")
    out = tmp_path / "app.log"
    plog.configure_logging(cfg_with(logconfig_dict=file_dict(out), errorlog=os.devnull))
    logging.getLogger(APP_LOGGER).info("hello")
    assert not bystander.disabled
    assert out.read_text() == "DICT hello\n"


def test_dict_wins_over_the_projects_handlers_and_an_undo_gives_them_back(tmp_path):
    project_out, ours = tmp_path / "project.log", tmp_path / "ours.log"
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"p": {"class": "logging.FileHandler", "filename": str(project_out)}},
        "loggers": {APP_LOGGER: {"handlers": ["p"], "level": "INFO"}},
    })
    plog.configure_logging(cfg_with(logconfig_dict=file_dict(ours), errorlog=os.devnull))
    logging.getLogger(APP_LOGGER).info("first")
    # A reload without the setting gives the logger back to the project's LOGGING.
    plog.configure_logging(cfg_with(errorlog=os.devnull))
    logging.getLogger(APP_LOGGER).info("second")
    assert ours.read_text() == "DICT first\n"
    assert project_out.read_text() == "second\n"


def test_routing_our_error_logger_replaces_errorlog(tmp_path):
    errorlog, routed = tmp_path / "error.log", tmp_path / "routed.log"
    plog.configure_logging(cfg_with(errorlog=str(errorlog),
                                    logconfig_dict=file_dict(routed, plog.ERROR_LOGGER)))
    logging.getLogger(plog.ERROR_LOGGER).info("booted")
    assert routed.read_text() == "DICT booted\n"
    assert not errorlog.exists()  # the logconfig owns the error log: ERRORLOG is not opened


def test_routing_the_access_logger_turns_the_access_log_on(tmp_path):
    out = tmp_path / "access.log"
    access = plog.configure_logging(cfg_with(
        errorlog=os.devnull, logconfig_dict=file_dict(out, plog.ACCESS_LOGGER,
                                                      propagate=False)))
    assert access is not None
    access.log({"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "SERVER_PROTOCOL": "HTTP/1.1"},
               "200 OK", [], 2, 0.0)
    assert out.read_text().startswith('DICT - - - [')


def test_ini_file(tmp_path):
    out = tmp_path / "ini.log"
    ini = tmp_path / "log.ini"
    ini.write_text(textwrap.dedent(f"""\
        [loggers]
        keys=root,app

        [handlers]
        keys=file

        [formatters]
        keys=plain

        [logger_root]
        level=WARNING
        handlers=

        [logger_app]
        qualname={APP_LOGGER}
        level=DEBUG
        handlers=file
        propagate=0

        [handler_file]
        class=FileHandler
        formatter=plain
        args=({str(out)!r}, 'a')

        [formatter_plain]
        format=INI %(levelname)s %(message)s
        """))
    plog.configure_logging(cfg_with(logconfig=str(ini), errorlog=os.devnull))
    logger = logging.getLogger(APP_LOGGER)
    logger.debug("detail")
    assert out.read_text() == "INI DEBUG detail\n"
    assert logger.propagate is False


def test_dict_wins_over_json_wins_over_ini(tmp_path):
    json_out, dict_out = tmp_path / "json.log", tmp_path / "dict.log"
    json_file = tmp_path / "log.json"
    json_file.write_text(json.dumps({"version": 1, **file_dict(json_out, fmt="JSON %(message)s")}))
    plog.configure_logging(cfg_with(logconfig_json=str(json_file), errorlog=os.devnull))
    logging.getLogger(APP_LOGGER).info("one")
    plog.configure_logging(cfg_with(logconfig_json=str(json_file), errorlog=os.devnull,
                                    logconfig_dict=file_dict(dict_out)))
    logging.getLogger(APP_LOGGER).info("two")
    assert json_out.read_text() == "JSON one\n"
    assert dict_out.read_text() == "DICT two\n"


@pytest.mark.parametrize(("setting", "content", "expected"), [
    ("logconfig_json", "{not json", r"--log-config-json \(LOGCONFIG_JSON\) '.*' cannot be "
                                    r"applied: not valid JSON"),
    ("logconfig_json", None, r"--log-config-json \(LOGCONFIG_JSON\) '.*' cannot be applied: "
                             r".*No such file"),
    ("logconfig", "[loggers]\nkeys=root\n", r"--log-config \(LOGCONFIG\) '.*' cannot be "
                                            r"applied: it has no \[handlers\] section"),
])
def test_a_bad_file_is_one_line_and_changes_nothing(tmp_path, setting, content, expected):
    errorlog = tmp_path / "error.log"
    plog.configure_logging(cfg_with(errorlog=str(errorlog)))
    path = tmp_path / "bad.conf"
    if content is not None:
        path.write_text(content)
    with pytest.raises(plog.LoggingSetupError, match=expected) as caught:
        plog.configure_logging(cfg_with(errorlog=str(tmp_path / "new.log"),
                                        **{setting: str(path)}))
    assert "\n" not in str(caught.value)
    logging.getLogger(plog.ERROR_LOGGER).info("still here")
    assert "still here" in errorlog.read_text()
    assert not (tmp_path / "new.log").exists() or (tmp_path / "new.log").read_text() == ""


def test_a_handler_that_cannot_open_closes_what_was_opened(tmp_path):
    good = tmp_path / "good.log"
    config = {
        "handlers": {
            "a_good": {"class": "logging.FileHandler", "filename": str(good)},
            "b_bad": {"class": "logging.FileHandler", "filename": "/nonexistent/d/x.log"},
        },
        "loggers": {APP_LOGGER: {"handlers": ["a_good", "b_bad"]}},
    }
    before = set(logging._handlerList)  # type: ignore[attr-defined]
    with pytest.raises(plog.LoggingSetupError, match=r"--log-config-dict \(LOGCONFIG_DICT\) "
                       r"cannot be applied: handler 'b_bad': .*No such file"):
        plog.configure_logging(cfg_with(logconfig_dict=config, errorlog=os.devnull))
    opened = [ref() for ref in set(logging._handlerList) - before]  # type: ignore[attr-defined]
    assert all(getattr(h, "stream", None) is None for h in opened if h is not None)
    assert logging.getLogger(APP_LOGGER).handlers == []


# --- validation ---------------------------------------------------------------------------

def test_logconfig_dict_validation():
    assert load_config(cli={"logconfig_dict": '{"loggers": {}}'}).logconfig_dict == {
        "loggers": {}}
    with pytest.raises(ConfigError, match=r"--log-config-dict .* is not valid JSON"):
        load_config(cli={"logconfig_dict": "{nope"})
    with pytest.raises(ConfigError, match=r"PREFORK\['LOGCONFIG_DICT'\] .* must hold only "
                                          r"JSON values"):
        load_config(prefork={"LOGCONFIG_DICT": {"filters": {"f": {"()": object}}}})
    with pytest.raises(ConfigError, match=r"version 2"):
        load_config(prefork={"LOGCONFIG_DICT": {"version": 2}})
    with pytest.raises(ConfigError, match=r"must be a dict, not str"):
        load_config(prefork={"LOGCONFIG_DICT": "logging.ini"})


def test_log_file_is_an_alias_of_error_logfile():
    import argparse

    from django_prefork.conf import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = vars(parser.parse_args(["--log-file", "/var/log/x.log"]))
    assert load_config(cli=options).errorlog == "/var/log/x.log"


# --- through a real server ----------------------------------------------------------------

def _settings_dir(tmp_path, name: str, body: str):
    directory = tmp_path / "mods"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(body)
    return directory


def _server(tmp_path, name: str, body: str, *args: str):
    from server import Server

    directory = _settings_dir(tmp_path, name, body)
    server = Server(*args, settings=name)
    server.env["PYTHONPATH"] = os.pathsep.join([str(directory), server.env["PYTHONPATH"]])
    return server


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_logconfig_dict_in_prefork_keeps_the_projects_logging(tmp_path, worker_class):
    from server import wait_until

    app_log, access_log = tmp_path / "app.log", tmp_path / "access.log"
    config = {
        "formatters": {"f": {"format": "DICT %(name)s %(message)s"}},
        "handlers": {
            "app": {"class": "logging.FileHandler", "filename": str(app_log), "formatter": "f"},
            "access": {"class": "logging.FileHandler", "filename": str(access_log),
                       "formatter": "f"},
        },
        "loggers": {
            "testproject.views": {"handlers": ["app"], "level": "INFO", "propagate": False},
            "django_prefork.access": {"handlers": ["access"], "propagate": False},
        },
    }
    body = ("from testproject.settings_logging import *\n"
            f"PREFORK = {{'LOGCONFIG_DICT': {config!r}}}\n")
    with _server(tmp_path, f"logdict_{worker_class}", body, "-k", worker_class) as server:
        server.start(wait_workers=1)
        assert server.get("/log?mark=m1")[0] == 200
        wait_until(lambda: app_log.exists() and "DICT testproject.views app m1"
                   in app_log.read_text(), message="the view's line in the logconfig file")
        wait_until(lambda: access_log.exists() and '"GET /log?mark=m1 HTTP/1.1" 200'
                   in access_log.read_text(), message="the access line in the logconfig file")
        # The project's LOGGING still serves the loggers the setting does not name.
        server.wait_for_line(r"PROJECT-LOG thirdparty thirdparty m1")
        assert "PROJECT-LOG testproject.views" not in server.output


INI = """\
[loggers]
keys=root,error

[handlers]
keys=console

[formatters]
keys=tagged

[logger_root]
level=WARNING
handlers=

[logger_error]
qualname=django_prefork.error
level=INFO
handlers=console
propagate=0

[handler_console]
class=StreamHandler
formatter=tagged
args=(sys.stderr,)

[formatter_tagged]
format=INI [%(levelname)s] %(message)s
"""


@pytest.mark.integration
def test_log_config_ini_on_the_command_line(tmp_path):
    from server import running

    ini = tmp_path / "logging.ini"
    ini.write_text(INI)
    with running("--log-config", str(ini), "-w", "2", wait_workers=2) as server:
        server.wait_for_line(r"^INI \[INFO\] Listening at: http://")
        server.wait_for_line(r"^INI \[INFO\] Booted worker with pid: \d+")  # in a worker
        assert server.get("/hello")[0] == 200


@pytest.mark.integration
@pytest.mark.parametrize(("args", "expected"), [
    (["--log-config-json", "{missing}"],
     r"--log-config-json \(LOGCONFIG_JSON\) '.*missing.json' cannot be applied: "
     r".*No such file or directory"),
    (["--log-config-dict", '{"handlers": {"h": {"class": "no.such.Handler"}}}'],
     r"--log-config-dict \(LOGCONFIG_DICT\) cannot be applied: handler 'h': "),
    (["--log-config-dict", "[1]"], r"--log-config-dict '\[1\]' is invalid: must be a dict"),
])
def test_a_bad_logconfig_stops_start_up_with_one_line(tmp_path, args, expected):
    from server import REPO_ROOT, TESTS_DIR

    args = [a.replace("{missing}", str(tmp_path / "missing.json")) for a in args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "django", "runprefork", "--settings=testproject.settings",
         "--bind", "127.0.0.1:0", "--skip-checks", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    import re
    assert re.search(expected, errors[0]), errors[0]
    assert "Listening at" not in proc.stdout + proc.stderr


def test_simple_namespace_cfg_is_enough():
    """Callers with an older cfg (no logconfig attributes) still work."""
    assert plog.configure_logging(SimpleNamespace(errorlog=os.devnull, accesslog=None,
                                                  loglevel="info")) is None


# --- capture_output and enable_stdio_inheritance, through a real server --------------------

PRINTING_URLS = '''\
import os
import sys

from django.http import HttpResponse
from django.urls import path


def shout(request):
    mark = request.GET["mark"]
    print(f"stdout-print {mark}")
    sys.stdout.flush()
    os.write(2, f"stderr-fd {mark}\\n".encode())  # below Python, as a C extension writes
    return HttpResponse("ok")


def say(request):
    print(f"unflushed-print {request.GET['mark']}")  # no flush: the buffering decides
    return HttpResponse("ok")


urlpatterns = [path("shout", shout), path("say", say)]
'''

PRINTING_SETTINGS = "from testproject.settings import *\nROOT_URLCONF = 'printingurls'\n"


def _printing_server(tmp_path, *args: str):
    directory = _settings_dir(tmp_path, "printingurls", PRINTING_URLS)
    return _server(tmp_path, "printingsettings", PRINTING_SETTINGS, *args), directory


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_capture_output_sends_stdout_and_stderr_to_the_error_log(tmp_path, worker_class):
    import re
    import signal

    from server import wait_until

    errorlog = tmp_path / "error.log"
    server, _ = _printing_server(tmp_path, "--capture-output", "--error-logfile",
                                 str(errorlog), "-k", worker_class)

    def text(path=errorlog) -> str:
        return path.read_text() if path.exists() else ""

    with server:
        server.start(wait_workers=None)
        port = wait_until(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text()),
                          timeout=30, message="the address in the error log").group(1)
        server.port = int(port)
        wait_until(lambda: "Booted worker" in text(), timeout=30, message="a booted worker")
        assert server.get("/shout?mark=one")[0] == 200
        wait_until(lambda: "stdout-print one" in text() and "stderr-fd one" in text(),
                   message="the worker's stdout and stderr in the error log")
        assert "Using worker:" in text()  # the master's stdout too
        assert "stdout-print" not in server.output
        # USR1 (logrotate) captures into the new file as well.
        rotated = tmp_path / "error.log.1"
        errorlog.rename(rotated)
        server.signal(signal.SIGUSR1)

        def printed_into_new_file() -> bool:
            server.get("/shout?mark=two")
            return "stdout-print two" in text() and "stderr-fd two" in text()

        wait_until(printed_into_new_file, timeout=30, interval=0.3,
                   message="the captured output in the reopened error log")


@pytest.mark.integration
def test_enable_stdio_inheritance_makes_print_output_appear_at_once(tmp_path):
    server, _ = _printing_server(tmp_path, "-R")
    server.env.pop("PYTHONUNBUFFERED", None)  # stdout is a pipe: block-buffered without -R
    with server:
        server.start(wait_workers=1)
        assert server.get("/say?mark=now")[0] == 200
        server.wait_for_line(r"^unflushed-print now$", timeout=20)


@pytest.mark.integration
def test_hup_with_a_logconfig_that_cannot_be_applied_keeps_the_old_logs(tmp_path):
    import signal

    from server import wait_until

    first, second = tmp_path / "first.log", tmp_path / "second.log"

    def settings(path) -> str:
        config = file_dict(path, "django_prefork.access", propagate=False)
        return ("from testproject.settings import *\n"
                f"PREFORK = {{'LOGCONFIG_DICT': {config!r}}}\n")

    directory = _settings_dir(tmp_path, "huplogdict", settings(first))
    server = _server(tmp_path, "huplogdict", settings(first))
    with server:
        server.start(wait_workers=1)
        assert server.get("/hello?before")[0] == 200
        wait_until(lambda: first.exists() and "/hello?before" in first.read_text(),
                   message="the access line in the first file")
        (directory / "huplogdict.py").write_text(settings("/nonexistent/d/access.log"))
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for_line(r"Reload aborted, the previous workers keep serving: "
                             r"--log-config-dict \(LOGCONFIG_DICT\) cannot be applied: handler "
                             r"'file': .*No such file", start=mark, timeout=30)
        assert server.get("/hello?after-bad-hup")[0] == 200
        wait_until(lambda: "/hello?after-bad-hup" in first.read_text(),
                   message="the old access file to keep working")
        (directory / "huplogdict.py").write_text(settings(second))
        server.signal(signal.SIGHUP)

        def served_into_second() -> bool:
            server.get("/hello?after-good-hup")
            return second.exists() and "after-good-hup" in second.read_text()

        wait_until(served_into_second, timeout=30, interval=0.3,
                   message="the new generation logging to the second file")


# --- logger_class ---------------------------------------------------------------------------

LOGGER_CLASS_MODULE = '''\
import logging
import os


class FileLogger:
    """Writes what the server logs to $LOGCLASS_OUT, one line each, tagged by method."""

    def __init__(self, cfg):
        self.path = os.environ["LOGCLASS_OUT"]
        self.loglevel = cfg.loglevel
        self.stream = open(self.path, "a", buffering=1)

    def _write(self, kind, msg):
        self.stream.write(f"{kind} {os.getpid()} {msg}\\n")

    def critical(self, msg, *args, **kwargs):
        self._write("CRITICAL", msg)

    def error(self, msg, *args, **kwargs):
        self._write("ERROR", msg)

    def warning(self, msg, *args, **kwargs):
        self._write("WARNING", msg)

    def info(self, msg, *args, **kwargs):
        self._write("INFO", msg)
        # Logging through the server's logger from inside must not loop.
        logging.getLogger("django_prefork.error").debug("from inside info()")

    def debug(self, msg, *args, **kwargs):
        self._write("DEBUG", msg)

    def exception(self, msg, *args, **kwargs):
        self._write("EXCEPTION", msg + (" +traceback" if kwargs.get("exc_info") else ""))

    def log(self, lvl, msg, *args, **kwargs):
        self._write(f"LOG{lvl}", msg)

    def access(self, resp, req, environ, request_time):
        agent = dict(req.headers).get("USER-AGENT")
        self._write("ACCESS", f"{req.method} {req.path} {req.query} {req.version} "
                              f"{resp.status_code} {resp.sent} "
                              f"{request_time.total_seconds() >= 0} {agent}")

    def reopen_files(self):
        self.stream.close()
        self.stream = open(self.path, "a", buffering=1)
        self._write("REOPENED", "-")

    def close_on_exec(self):
        pass


class Incomplete:
    def __init__(self, cfg):
        pass

    def info(self, msg):
        pass
'''


@pytest.fixture
def logger_class_module(tmp_path, monkeypatch):
    directory = _settings_dir(tmp_path, "logclassmod", LOGGER_CLASS_MODULE)
    out = tmp_path / "logclass.out"
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.setenv("LOGCLASS_OUT", str(out))
    yield out
    sys.modules.pop("logclassmod", None)


def test_logger_class_gets_the_error_log_and_the_access_log(logger_class_module):
    out = logger_class_module
    access = plog.configure_logging(cfg_with(logger_class="logclassmod.FileLogger",
                                             loglevel="debug"))
    error = logging.getLogger(plog.ERROR_LOGGER)
    error.info("hello %s", "there")
    error.warning("careful")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        error.exception("it broke")
    assert access is not None
    access.log({"REQUEST_METHOD": "GET", "PATH_INFO": "/p", "QUERY_STRING": "a=1",
                "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_USER_AGENT": "curl/8"},
               "404 Not Found", [], 12, 0.5)
    lines = [line.split(" ", 2) for line in out.read_text().splitlines()]
    assert [(kind, text) for kind, _, text in lines] == [
        # (the record info() logs itself is not handed back to it: no loop)
        ("INFO", "hello there"), ("WARNING", "careful"),
        ("EXCEPTION", "it broke +traceback"),
        ("ACCESS", "GET /p a=1 (1, 0) 404 12 True curl/8"),
    ]
    plog.reopen_log_files()
    assert out.read_text().splitlines()[-1].startswith("REOPENED")


@pytest.mark.parametrize(("path", "expected"), [
    ("logclassmod.Missing", r"--logger-class \(LOGGER_CLASS\) 'logclassmod.Missing' cannot "
                            r"be imported: AttributeError"),
    ("nosuchmodule.Logger", r"cannot be imported: ModuleNotFoundError"),
    ("Logger", r"is not a dotted path"),
    ("logclassmod.Incomplete", r"'logclassmod.Incomplete' has no critical, error, warning, "
                               r"debug, exception, log, access, reopen_files, close_on_exec"),
])
def test_a_bad_logger_class_is_one_line(logger_class_module, tmp_path, path, expected):
    errorlog = tmp_path / "error.log"
    plog.configure_logging(cfg_with(errorlog=str(errorlog)))
    with pytest.raises(plog.LoggingSetupError, match=expected) as caught:
        plog.configure_logging(cfg_with(logger_class=path))
    assert "\n" not in str(caught.value)
    logging.getLogger(plog.ERROR_LOGGER).info("kept")
    assert "kept" in errorlog.read_text()


def test_gunicorns_default_logger_class_means_the_built_in_one(tmp_path):
    errorlog = tmp_path / "error.log"
    plog.configure_logging(cfg_with(errorlog=str(errorlog),
                                    logger_class="gunicorn.glogging.Logger"))
    logging.getLogger(plog.ERROR_LOGGER).info("built-in")
    assert "[INFO] built-in" in errorlog.read_text()


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_logger_class_through_runprefork(tmp_path, worker_class):
    import re
    import signal

    from server import Server, wait_until

    directory = _settings_dir(tmp_path, "logclassmod", LOGGER_CLASS_MODULE)
    out = tmp_path / "logclass.out"
    server = Server("--logger-class", "logclassmod.FileLogger", "-k", worker_class,
                    env={"LOGCLASS_OUT": str(out)})
    server.env["PYTHONPATH"] = os.pathsep.join([str(directory), server.env["PYTHONPATH"]])

    def text() -> str:
        return out.read_text() if out.exists() else ""

    with server:
        server.start(wait_workers=None)
        port = wait_until(lambda: re.search(r"^INFO (\d+) Listening at: http://127\.0\.0\.1:"
                                            r"(\d+)", text(), re.M), timeout=30,
                          message="the master's line through the class")
        server.port = int(port.group(2))
        booted = wait_until(lambda: re.search(r"^INFO (\d+) Booted worker with pid: (\d+)",
                                              text(), re.M), timeout=30,
                            message="the worker's line through the class")
        worker = booted.group(2)
        assert booted.group(1) == worker != port.group(1)
        assert server.get("/hello?q=1", headers={"User-Agent": "probe/1"})[0] == 200
        wait_until(lambda: f"ACCESS {worker} GET /hello q=1 (1, 1) 200 " in text(),
                   message="the access line through the class")
        assert "probe/1" in text()
        server.signal(signal.SIGUSR1)
        wait_until(lambda: f"REOPENED {worker} " in text() and
                   f"REOPENED {port.group(1)} " in text(),
                   message="reopen_files() in the master and the worker")


def test_a_logger_named_without_handlers_keeps_the_projects(tmp_path):
    project_out = tmp_path / "project.log"
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"p": {"class": "logging.FileHandler", "filename": str(project_out)}},
        "loggers": {APP_LOGGER: {"handlers": ["p"], "level": "INFO"}},
    })
    plog.configure_logging(cfg_with(errorlog=os.devnull, logconfig_dict={
        "loggers": {APP_LOGGER: {"level": "WARNING"}}}))
    logging.getLogger(APP_LOGGER).info("dropped by the new level")
    logging.getLogger(APP_LOGGER).warning("kept")
    assert project_out.read_text() == "kept\n"
