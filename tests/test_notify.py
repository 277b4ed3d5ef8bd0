"""sd_notify: the datagrams a real runprefork sends to a NOTIFY_SOCKET made by the test."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from django_prefork.server.notify import Notifier
from server import Server

pytestmark = pytest.mark.integration


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)

    def receive(self, timeout: float = 30.0) -> dict[str, str]:
        """The next datagram as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def nothing_within(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@contextmanager
def notify_socket(address: str) -> Iterator[NotifyListener]:
    listener = NotifyListener(address)
    try:
        yield listener
    finally:
        listener.close()


def _life_cycle(address: str) -> None:
    with notify_socket(address) as systemd:
        server = Server("--workers", "2", env={"NOTIFY_SOCKET": address})
        try:
            server.start(wait_workers=1)
            ready = systemd.receive()
            assert ready["READY"] == "1"
            assert ready["MAINPID"] == str(server.pid)
            assert ready["STATUS"].startswith("Serving")
            # Once, not on every tick of the loop.
            assert systemd.nothing_within(1.5)

            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            server.signal(signal.SIGHUP)
            reloading = systemd.receive()
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert reloading["RELOADING"] == "1"
            assert before <= int(reloading["MONOTONIC_USEC"]) <= after
            done = systemd.receive(timeout=60)
            assert done["READY"] == "1"
            # READY=1 after the reload means the new generation serves.
            server.wait_for_line(r"Reloading: starting generation 1")
            assert server.get("/hello")[0] == 200

            server.signal(signal.SIGTERM)
            assert systemd.receive()["STOPPING"] == "1"
            assert server.wait_exit() == 0
        finally:
            server.stop()


def test_datagrams_in_order_to_a_socket_path(tmp_path: Path):
    _life_cycle(str(tmp_path / "notify.sock"))


def test_datagrams_in_order_to_an_abstract_socket():
    _life_cycle(f"@django-prefork-test-{uuid.uuid4().hex}")


def test_quick_stop_also_says_stopping(tmp_path: Path):
    address = str(tmp_path / "notify.sock")
    with notify_socket(address) as systemd:
        server = Server("--workers", "1", env={"NOTIFY_SOCKET": address})
        try:
            server.start()
            assert systemd.receive()["READY"] == "1"
            server.signal(signal.SIGINT)
            assert systemd.receive()["STOPPING"] == "1"
        finally:
            server.stop()


def test_failed_reload_still_ends_with_ready(tmp_path: Path):
    """A HUP that cannot load new settings must not leave systemd waiting in "reloading"."""
    settings_dir = tmp_path / "settings_pkg"
    settings_dir.mkdir()
    module = settings_dir / "notify_reload_settings.py"
    module.write_text("from testproject.settings import *  # noqa\n")
    address = str(tmp_path / "notify.sock")
    with notify_socket(address) as systemd:
        server = Server("--workers", "1", settings="notify_reload_settings",
                        env={"NOTIFY_SOCKET": address})
        server.env["PYTHONPATH"] += os.pathsep + str(settings_dir)
        try:
            server.start()
            assert systemd.receive()["READY"] == "1"
            module.write_text("raise RuntimeError('broken on purpose')\n")
            server.signal(signal.SIGHUP)
            assert systemd.receive()["RELOADING"] == "1"
            assert systemd.receive(timeout=90)["READY"] == "1"
            server.wait_for_line(r"Reload aborted")
            assert server.get("/hello")[0] == 200
        finally:
            server.stop()


def test_without_notify_socket_nothing_is_sent_and_nothing_raises(tmp_path: Path):
    assert not Notifier(environ={}).send("READY=1")
    # A socket that nobody listens on: logged once, never raised into the master.
    gone = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert not gone.send("READY=1")
    gone.serving("Serving")
    gone.reload_started()
    gone.stopping()
