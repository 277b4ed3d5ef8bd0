"""Syslog: gunicorn's address forms, RFC 3164 priorities, the prefix, through runprefork.

The test makes the "syslog daemon": a UDP socket on 127.0.0.1 or a unix datagram socket in
tmp_path, and reads what the master and the workers send to it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from django_prefork.conf import ConfigError, load_config
from django_prefork.logsyslog import (
    FACILITIES,
    SyslogAddress,
    default_syslog_address,
    parse_syslog_address,
    syslog_tag,
)

LOG_INFO, LOG_ERR = 6, 3  # RFC 3164 severities


# --- addresses -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("udp://localhost:514", SyslogAddress("udp", host="localhost", port=514)),
    ("udp://10.0.0.5", SyslogAddress("udp", host="10.0.0.5", port=514)),
    ("udp://", SyslogAddress("udp", host="localhost", port=514)),
    ("tcp://LogHost:6514", SyslogAddress("tcp", host="loghost", port=6514)),
    ("udp://[::1]:5514", SyslogAddress("udp", host="::1", port=5514)),
    ("unix:///dev/log", SyslogAddress("unix", path="/dev/log")),
    ("unix:///dev/log#dgram", SyslogAddress("unix", path="/dev/log",
                                            socktype=socket.SOCK_DGRAM)),
    ("unix:///run/s#stream", SyslogAddress("unix", path="/run/s",
                                           socktype=socket.SOCK_STREAM)),
])
def test_gunicorn_address_forms(text, expected):
    assert parse_syslog_address(text) == expected


@pytest.mark.parametrize("text", ["localhost:514", "http://x:1", "udp://h:port",
                                  "udp://h:0", "unix://", "unix:///dev/log#seqpacket",
                                  "udp://[::1"])
def test_bad_addresses_are_one_line_config_errors(text):
    with pytest.raises(ConfigError) as caught:
        load_config(cli={"syslog_addr": text})
    message = str(caught.value)
    assert message.startswith("--log-syslog-to ") and "Fix: pass --log-syslog-to" in message
    assert "\n" not in message


def test_platform_defaults_are_gunicorns():
    assert default_syslog_address("linux") == "udp://localhost:514"
    assert default_syslog_address("darwin") == "unix:///var/run/syslog"
    assert default_syslog_address("freebsd14") == "unix:///var/run/log"
    assert default_syslog_address("openbsd7") == "unix:///dev/log"
    assert load_config().syslog_addr == default_syslog_address()


def test_facility_names_and_tag():
    assert load_config(cli={"syslog_facility": "LOCAL3"}).syslog_facility == "local3"
    with pytest.raises(ConfigError, match=r"--log-syslog-facility nope is invalid"):
        load_config(cli={"syslog_facility": "nope"})
    assert syslog_tag("mysite", "error") == "django-prefork.mysite.error"
    assert syslog_tag(None, "access") == "django-prefork.access"


# --- through a real server -----------------------------------------------------------------

class Receiver:
    """A datagram socket that collects every message sent to it, decoded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[str] = []
        self._changed = threading.Condition()
        sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(data.decode("utf-8", "replace"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((m for m in map(regex.search, self.messages) if m), None),
                timeout=timeout)
        if not found:
            raise AssertionError(f"no syslog message matching {pattern!r} in {timeout}s; "
                                 f"got: {self.messages[-20:]!r}")
        return found

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    receiver = Receiver(sock)
    yield receiver, f"udp://127.0.0.1:{sock.getsockname()[1]}"
    receiver.close()


@pytest.fixture
def unix_receiver(tmp_path):
    path = str(tmp_path / "syslog.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    receiver = Receiver(sock)
    yield receiver, f"unix://{path}#dgram"
    receiver.close()


def _pri(facility: str, severity: int) -> str:
    return f"<{FACILITIES[facility] * 8 + severity}>"


@pytest.mark.integration
@pytest.mark.parametrize("worker_args", [["-k", "sync"], ["-k", "gthread"], ["-k", "gevent"],
                                         ["-k", "sync", "--preload"]])
def test_udp_syslog_priorities_and_prefix(udp_receiver, worker_args):
    from server import running

    receiver, address = udp_receiver
    with running("--log-syslog", "--log-syslog-to", address, "--log-syslog-prefix", "mysite",
                 "--log-syslog-facility", "local0", *worker_args) as server:
        master = server.pid
        # The master's info line, then a worker's (sent after the app loaded).
        receiver.wait_for(re.escape(_pri("local0", LOG_INFO))
                          + rf"django-prefork\.mysite\.error: \[{master}\] Listening at: ")
        booted = receiver.wait_for(re.escape(_pri("local0", LOG_INFO))
                                   + r"django-prefork\.mysite\.error: \[(\d+)\] Booted worker "
                                   r"with pid: (\d+)")
        worker = int(booted.group(2))
        assert int(booted.group(1)) == worker != master
        # The access log goes to syslog too, even without --access-logfile (as gunicorn).
        assert server.get("/hello?via-syslog")[0] == 200
        receiver.wait_for(re.escape(_pri("local0", LOG_INFO))
                          + rf"django-prefork\.mysite\.access: \[{worker}\] 127\.0\.0\.1 - - "
                          r'\[[^]]+\] "GET /hello\?via-syslog HTTP/1\.1" 200 ')
        # An error from the master carries the error severity.
        os.kill(worker, signal.SIGKILL)
        receiver.wait_for(re.escape(_pri("local0", LOG_ERR))
                          + rf"django-prefork\.mysite\.error: \[{master}\] Worker "
                          rf"\(pid:{worker}\) was sent SIGKILL")


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_unix_datagram_syslog_without_the_access_log(unix_receiver, worker_class):
    from server import running

    receiver, address = unix_receiver
    with running("--log-syslog", "--log-syslog-to", address, "--name", "shop",
                 "--disable-redirect-access-to-syslog", "--access-logfile", "-",
                 "-k", worker_class) as server:
        booted = receiver.wait_for(re.escape(_pri("user", LOG_INFO))
                                   + r"django-prefork\.shop\.error: \[\d+\] Booted worker with "
                                   r"pid: (\d+)")
        worker = int(booted.group(1))
        assert server.get("/hello?not-in-syslog")[0] == 200
        server.wait_for_line(r'"GET /hello\?not-in-syslog HTTP/1\.1" 200')  # stdout has it
        # The worker wrote its access line (and would have sent it to syslog first); the
        # master's later line arrives after anything the worker sent before it.
        os.kill(worker, signal.SIGKILL)
        receiver.wait_for(rf"Worker \(pid:{worker}\) was sent SIGKILL")
        assert not [m for m in receiver.messages if "not-in-syslog" in m]
        assert not [m for m in receiver.messages if ".access:" in m]


@pytest.mark.integration
def test_a_syslog_socket_that_cannot_be_opened_stops_start_up(tmp_path):
    from server import REPO_ROOT, TESTS_DIR

    missing = tmp_path / "no-syslog.sock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "django", "runprefork", "--settings=testproject.settings",
         "--bind", "127.0.0.1:0", "--skip-checks", "--log-syslog",
         "--log-syslog-to", f"unix://{missing}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert re.search(rf"--log-syslog-to \(SYSLOG_ADDR\) 'unix://{re.escape(str(missing))}' "
                     r"cannot be opened: .*Fix: ", errors[0]), errors[0]
