"""django_prefork.logging: logger wiring, reopening on USR1, access-log atoms, JSON format."""

from __future__ import annotations

import base64
import json
import logging
import logging.config
import os
import re
from types import SimpleNamespace

import pytest

from django_prefork import logging as plog

NAMES = (plog.PARENT_LOGGER, plog.ERROR_LOGGER, plog.ACCESS_LOGGER)


@pytest.fixture(autouse=True)
def clean_loggers():
    """Give every test pristine loggers; undo configure_logging and dictConfig afterwards."""
    manager = logging.root.manager
    was_disabled = {name: obj.disabled for name, obj in manager.loggerDict.items()
                if isinstance(obj, logging.Logger)}
    root = (logging.root.handlers[:], logging.root.level)
    saved = {}
    for name in NAMES:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
    yield
    plog._undo_previous()
    plog._state.levels.clear()
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled
    for name, obj in manager.loggerDict.items():
        if isinstance(obj, logging.Logger) and name not in saved:
            obj.disabled = was_disabled.get(name, False)
    logging.root.handlers[:], logging.root.level = root


def make_cfg(**kwargs):
    defaults = {"errorlog": "-", "accesslog": None, "loglevel": "info",
                "access_log_format": plog.DEFAULT_ACCESS_LOG_FORMAT}
    defaults.update(kwargs)
    return SimpleNamespace(**defaults)


ENVIRON = {
    "REQUEST_METHOD": "GET",
    "RAW_URI": "/caf%C3%A9/?a=1&b=2",
    "PATH_INFO": "/café/",
    "QUERY_STRING": "a=1&b=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "192.0.2.7",
    "HTTP_REFERER": "https://example.com/",
    "HTTP_USER_AGENT": "curl/8.0",
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "CONTENT_TYPE": "text/plain",
    "wsgi.url_scheme": "https",
}
HEADERS = [("Content-Type", "text/html"), ("X-Request-Id", "abc123")]


def fmt(atoms: str, environ=None, status="404 Not Found", headers=HEADERS, sent=1234,
        request_time=1.5) -> str:
    logger = plog.AccessLogger(atoms)
    return logger.format(environ if environ is not None else ENVIRON, status, headers, sent,
                         request_time)


def read(path) -> list[str]:
    return path.read_text().splitlines()


# --- configure_logging ----------------------------------------------------------------------

def test_disable_existing_loggers_does_not_silence_us(tmp_path):
    for name in NAMES:
        logging.getLogger(name)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
    assert logging.getLogger(plog.ACCESS_LOGGER).disabled
    access_log = tmp_path / "access.log"
    access = plog.configure_logging(make_cfg(accesslog=str(access_log), errorlog=os.devnull))
    assert access is not None
    access.log(ENVIRON, "200 OK", [], 5, 0.01)
    (line,) = read(access_log)
    assert line.startswith('192.0.2.7 - - [') and '"GET /caf%C3%A9/?a=1&b=2 HTTP/1.1" 200 5' in line


def test_project_logging_routes_access_log(tmp_path):
    project_log = tmp_path / "project.log"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": True,
        "formatters": {"tagged": {"format": "PROJECT %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(project_log),
                              "formatter": "tagged"}},
        "loggers": {plog.ACCESS_LOGGER: {"handlers": ["file"], "level": "INFO"}},
    })
    access_logger = logging.getLogger(plog.ACCESS_LOGGER)
    project_handlers = access_logger.handlers[:]
    # No --access-logfile: the project's routing alone turns the access log on.
    access = plog.configure_logging(make_cfg(accesslog=None, errorlog=os.devnull))
    assert access is not None
    assert access_logger.handlers == project_handlers
    assert access_logger.propagate is True
    access.log(ENVIRON, "200 OK", [], 5, 0.01)
    (line,) = read(project_log)
    assert line.startswith("PROJECT 192.0.2.7 ")


def test_project_level_is_kept(tmp_path):
    logging.getLogger(plog.ERROR_LOGGER).setLevel(logging.ERROR)
    error_log = tmp_path / "error.log"
    plog.configure_logging(make_cfg(errorlog=str(error_log), loglevel="debug"))
    logger = logging.getLogger(plog.ERROR_LOGGER)
    logger.warning("dropped")
    logger.error("kept")
    assert [line.rsplit("] ", 1)[1] for line in read(error_log)] == ["kept"]


def test_access_log_off_returns_none():
    cfg = make_cfg(accesslog=None, errorlog=os.devnull)
    assert plog.configure_logging(cfg) is None
    assert plog.make_access_logger(cfg) is None


def test_make_access_logger_follows_project_routing(tmp_path):
    cfg = make_cfg(accesslog=None, errorlog=os.devnull, access_log_format="%(s)s")
    plog.configure_logging(cfg)
    logging.getLogger(plog.PARENT_LOGGER).addHandler(logging.NullHandler())
    access = plog.make_access_logger(cfg)
    assert access is not None and access.fmt == "%(s)s"
    assert access.logger is logging.getLogger(plog.ACCESS_LOGGER)


def test_error_log_format_and_level(tmp_path):
    error_log = tmp_path / "error.log"
    plog.configure_logging(make_cfg(errorlog=str(error_log), loglevel="warning"))
    logger = logging.getLogger(plog.ERROR_LOGGER)
    logger.info("hidden")
    logger.warning("Booting worker with pid: %s", 42)
    (line,) = read(error_log)
    pattern = (r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] "
               rf"\[{os.getpid()}\] \[WARNING\] Booting worker with pid: 42")
    assert re.fullmatch(pattern, line)


def test_reconfigure_replaces_handlers(tmp_path):
    access_log = tmp_path / "access.log"
    cfg = make_cfg(accesslog=str(access_log), errorlog=os.devnull)
    plog.configure_logging(cfg)
    access = plog.configure_logging(cfg)
    assert len(logging.getLogger(plog.ACCESS_LOGGER).handlers) == 1
    access.log(ENVIRON, "200 OK", [], 5, 0.01)
    assert len(read(access_log)) == 1


def test_reconfigure_new_loglevel(tmp_path):
    plog.configure_logging(make_cfg(errorlog=os.devnull, loglevel="info"))
    plog.configure_logging(make_cfg(errorlog=os.devnull, loglevel="debug"))
    assert logging.getLogger(plog.ERROR_LOGGER).level == logging.DEBUG


def test_reopen_log_files(tmp_path):
    access_log = tmp_path / "access.log"
    error_log = tmp_path / "error.log"
    access = plog.configure_logging(make_cfg(accesslog=str(access_log), errorlog=str(error_log),
                                             access_log_format="%(U)s"))
    access.log({"PATH_INFO": "/first"}, "200 OK", [], 0, 0.0)
    logging.getLogger(plog.ERROR_LOGGER).info("first error")
    access_log.rename(tmp_path / "access.log.1")
    error_log.rename(tmp_path / "error.log.1")
    plog.reopen_log_files()
    access.log({"PATH_INFO": "/second"}, "200 OK", [], 0, 0.0)
    logging.getLogger(plog.ERROR_LOGGER).info("second error")
    assert read(access_log) == ["/second"]
    assert read(tmp_path / "access.log.1") == ["/first"]
    assert read(error_log)[0].endswith("second error")
    assert read(tmp_path / "error.log.1")[0].endswith("first error")


def test_unopenable_file_keeps_the_previous_handlers(tmp_path):
    access_log = tmp_path / "access.log"
    error_log = tmp_path / "error.log"
    access = plog.configure_logging(make_cfg(accesslog=str(access_log), errorlog=str(error_log),
                                             access_log_format="%(U)s"))
    before = {name: logging.getLogger(name).handlers[:] for name in NAMES}
    for bad in ({"accesslog": "/nonexistent/d/x.log", "errorlog": str(error_log)},
                {"accesslog": str(access_log), "errorlog": "/nonexistent/d/x.log"}):
        with pytest.raises(plog.LoggingSetupError) as caught:
            plog.configure_logging(make_cfg(**bad))
        message = str(caught.value)
        assert "\n" not in message and "'/nonexistent/d/x.log'" in message
        assert "No such file or directory" in message
        assert ("ACCESSLOG" if bad["accesslog"].startswith("/nonexistent") else "ERRORLOG") \
            in message
        assert {name: logging.getLogger(name).handlers for name in NAMES} == before
    access.log({"PATH_INFO": "/still"}, "200 OK", [], 0, 0.0)
    logging.getLogger(plog.ERROR_LOGGER).info("still logging")
    assert read(access_log) == ["/still"]
    assert read(error_log)[0].endswith("still logging")
    # A good path afterwards replaces the old handlers as usual.
    plog.configure_logging(make_cfg(accesslog=str(tmp_path / "new.log"), errorlog=os.devnull))
    assert len(logging.getLogger(plog.ACCESS_LOGGER).handlers) == 1


class FlakyStream:
    """A stream that fails to write (as a full disk does) while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_log_that_cannot_be_written_is_reported_once_then_rate_limited(capfd, monkeypatch):
    stream = FlakyStream()
    handler = plog._make_handler("-", stream, "access log")
    logger = logging.getLogger("test.flaky")
    logger.addHandler(handler)
    logger.propagate = False
    clock = [1000.0]
    monkeypatch.setattr(plog.time, "monotonic", lambda: clock[0])
    try:
        logger.warning("written")
        stream.full = True
        for _ in range(500):
            logger.warning("lost")
        first = capfd.readouterr().err.splitlines()
        assert first == ["django-prefork: cannot write the access log: No space left on device; "
                         "lines are lost until it can (reported at most every 60 s)."]
        clock[0] += plog.WRITE_FAILURE_REPORT_INTERVAL
        logger.warning("lost")
        logger.warning("lost")
        later = capfd.readouterr().err.splitlines()
        assert later == ["django-prefork: still cannot write the access log: No space left on "
                         "device; 500 more lines lost."]
        stream.full = False
        logger.warning("back")
        logger.warning("again")
        recovered = capfd.readouterr().err.splitlines()
        assert recovered == ["django-prefork: the access log is written again; 502 lines could "
                             "not be written."]
        assert [line.strip() for line in stream.lines] == ["written", "back", "again"]
        # A new failure after recovery is reported at once again.
        stream.full = True
        logger.warning("lost")
        assert "cannot write the access log" in capfd.readouterr().err
    finally:
        logger.removeHandler(handler)


def test_a_full_access_log_is_reported_in_the_error_log(tmp_path):
    error_log = tmp_path / "error.log"
    access = plog.configure_logging(make_cfg(accesslog="/dev/full", errorlog=str(error_log)))
    for _ in range(20):
        access.log(ENVIRON, "200 OK", [], 5, 0.01)
    (line,) = read(error_log)
    assert line.endswith("[WARNING] cannot write the access log /dev/full: No space left on "
                         "device; lines are lost until it can (reported at most every 60 s).")
    # USR1 and HUP replace the file even though its last lines cannot be flushed.
    plog.reopen_log_files()
    access.log(ENVIRON, "200 OK", [], 5, 0.01)
    plog.configure_logging(make_cfg(accesslog=str(tmp_path / "access.log"), errorlog=os.devnull))


# --- ErrorStream ----------------------------------------------------------------------------

def test_error_stream_lines(caplog):
    stream = plog.ErrorStream()
    with caplog.at_level(logging.DEBUG, logger=plog.ERROR_LOGGER):
        print("hello", "world", file=stream)
        stream.write("part")
        stream.writelines([" one\nnext", "\n"])
        stream.write("tail")
        stream.flush()
    assert [r.getMessage() for r in caplog.records] == ["hello world", "part one", "next", "tail"]
    assert all(r.name == plog.ERROR_LOGGER for r in caplog.records)


# --- AccessLogger atoms ---------------------------------------------------------------------

@pytest.mark.parametrize(("atom", "expected"), [
    ("h", "192.0.2.7"),
    ("l", "-"),
    ("u", "-"),
    ("r", "GET /caf%C3%A9/?a=1&b=2 HTTP/1.1"),
    ("m", "GET"),
    ("U", "/café/"),
    ("q", "a=1&b=2"),
    ("H", "HTTP/1.1"),
    ("s", "404"),
    ("B", "1234"),
    ("b", "1234"),
    ("f", "https://example.com/"),
    ("a", "curl/8.0"),
    ("T", "1"),
    ("D", "1500000"),
    ("M", "1500"),
    ("L", "1.500000"),
    ("p", f"<{os.getpid()}>"),
    ("{x-forwarded-for}i", "203.0.113.9"),
    ("{Content-Type}i", "text/plain"),
    ("{accept}i", "-"),
    ("{x-request-id}o", "abc123"),
    ("{Content-Length}o", "-"),
    ("{wsgi.url_scheme}e", "https"),
    ("{missing}e", "-"),
    ("{remote_addr}e", "192.0.2.7"),
    ("nonsense", "-"),
])
def test_atom(atom, expected):
    assert fmt(f"%({atom})s") == expected


def test_empty_query_string():
    assert fmt("[%(q)s]", {**ENVIRON, "QUERY_STRING": ""}) == "[]"


def test_request_time_atoms_agree():
    assert fmt("%(T)s %(M)s %(D)s %(L)s", request_time=2.29) == "2 2290 2290000 2.290000"


def test_time_atom():
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fmt("%(t)s"))


def test_user_from_basic_auth():
    token = base64.b64encode(b"alice:s3cret:x").decode()
    environ = {**ENVIRON, "HTTP_AUTHORIZATION": f"Basic {token}"}
    assert fmt("%(u)s", environ) == "alice"
    assert fmt("%(u)s", {**ENVIRON, "HTTP_AUTHORIZATION": "Basic !!!"}) == "-"
    assert fmt("%(u)s", {**ENVIRON, "HTTP_AUTHORIZATION": "Bearer abc"}) == "-"


def test_zero_bytes_and_numeric_conversions():
    assert fmt("%(b)s %(B)s", sent=0) == "- 0"
    assert fmt("%(D)d %(B)06d", request_time=0.25, sent=42) == "250000 000042"


def test_request_line_without_raw_uri():
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/a b/%", "QUERY_STRING": "x=1",
               "SERVER_PROTOCOL": "HTTP/1.0", "SCRIPT_NAME": "/app"}
    assert fmt("%(r)s", environ) == "POST /app/a%20b/%25?x=1 HTTP/1.0"


def test_default_format():
    line = fmt(plog.DEFAULT_ACCESS_LOG_FORMAT, status="200 OK")
    assert re.fullmatch(
        r'192\.0\.2\.7 - - \[[^]]+\] "GET /caf%C3%A9/\?a=1&b=2 HTTP/1\.1" 200 1234 '
        r'"https://example\.com/" "curl/8\.0"', line)


def test_text_format_escapes_quotes_and_control_chars():
    environ = {**ENVIRON, "HTTP_USER_AGENT": 'evil "agent" \\ \n200 fake'}
    assert fmt('"%(a)s"', environ) == '"evil \\"agent\\" \\\\ \\x0a200 fake"'


def test_json_format_is_valid_json():
    environ = {**ENVIRON, "HTTP_USER_AGENT": 'Mozilla "5.0" \\ C:\\path\n\ttab \x00 é'}
    json_fmt = ('{"remote": "%(h)s", "request": "%(r)s", "status": %(s)s, "bytes": %(B)s, '
                '"agent": "%(a)s", "ms": %(M)s, "id": "%({x-request-id}o)s"}')
    access = plog.AccessLogger(json_fmt)
    assert access.json
    record = json.loads(access.format(environ, "201 Created", HEADERS, 7, 0.002))
    assert record == {"remote": "192.0.2.7", "request": "GET /caf%C3%A9/?a=1&b=2 HTTP/1.1",
                      "status": 201, "bytes": 7, "agent": environ["HTTP_USER_AGENT"],
                      "ms": 2, "id": "abc123"}


def test_text_format_is_not_json():
    assert not plog.AccessLogger("%(h)s {not json}").json
    assert not plog.AccessLogger("{broken %(h)s").json


def test_invalid_format_fails_at_start():
    with pytest.raises(ValueError, match="access_log_format"):
        plog.AccessLogger("%(h)s 100%")


def test_log_uses_logger_and_never_raises(caplog):
    access = plog.AccessLogger("%(U)s %(T)s", logging.getLogger("test.access"))
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log({"PATH_INFO": "/x"}, "200 OK", [], 0, 0.0)
        access.log({"PATH_INFO": "/y"}, None, [], 0, "not a number")  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if r.name == "test.access"] == ["/x 0"]
    assert "Failed to format the access log line" in caplog.text


# --- through a real server -------------------------------------------------------------------

def _settings_module(tmp_path, name: str):
    """A settings module in its own directory, rewritten by the test, and a Server using it."""
    from server import Server

    directory = tmp_path / "settingsmod"
    directory.mkdir(exist_ok=True)
    module = directory / f"{name}.py"
    server = Server(settings=name)
    server.env["PYTHONPATH"] = os.pathsep.join([str(directory), server.env["PYTHONPATH"]])
    return module, server


def _prefork_settings(**prefork: str) -> str:
    return f"from testproject.settings import *\nPREFORK = {prefork!r}\n"


@pytest.mark.integration
def test_hup_with_a_log_path_that_cannot_be_opened_keeps_serving(tmp_path):
    import signal

    from server import wait_until

    first_log, fixed_log = tmp_path / "access.log", tmp_path / "access-fixed.log"
    module, server = _settings_module(tmp_path, "badlogsettings")
    module.write_text(_prefork_settings(ACCESSLOG=str(first_log)))
    with server:
        server.start(wait_workers=1)
        assert server.get("/hello")[0] == 200
        wait_until(lambda: first_log.exists() and "/hello" in first_log.read_text(),
                   message="the first access-log line")
        module.write_text(_prefork_settings(ACCESSLOG="/nonexistent/d/x.log",
                                            ERRORLOG="/nonexistent/d/x.log"))
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for_line(r"ERRORLOG\) '/nonexistent/d/x\.log' cannot be opened", start=mark,
                             timeout=30)
        assert server.proc is not None and server.proc.poll() is None
        status, _, _ = server.get("/hello?after-bad-hup")
        assert status == 200
        wait_until(lambda: "after-bad-hup" in first_log.read_text(),
                   message="the old access log to keep working")
        failures = [line for line in server.lines[mark:] if "/nonexistent/d/x.log" in line]
        assert len(failures) == 1, server.output
        assert "Traceback" not in "\n".join(server.lines[mark:])
        # Fixing the path and sending HUP again switches to the new file.
        module.write_text(_prefork_settings(ACCESSLOG=str(fixed_log)))
        server.signal(signal.SIGHUP)

        def served_into_fixed_log() -> bool:
            server.get("/hello?after-fixed-hup")
            return fixed_log.exists() and "after-fixed-hup" in fixed_log.read_text()

        wait_until(served_into_fixed_log, timeout=30, interval=0.2,
                   message="requests logged to the fixed access log")
