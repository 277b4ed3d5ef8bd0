"""USR2, the binary upgrade: a new master on the same sockets, the old one TERMed after.

Every master and worker started here is stopped by PID at the end, including the new master,
which outlives the Server object's own process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_notify import notify_socket

from server import BOOTED_RE, Server, children_of, is_zygote, pid_alive, wait_until

pytestmark = pytest.mark.integration

DETACHED = {"start_new_session": True}  # no controlling terminal, as in production


class ClientLoop:
    """A fresh connection per request, from a thread, throughout the upgrade."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ok = 0
        self.served_by: set[int] = set()  # worker pids seen
        #: (when the request was sent, the pid that answered it), in order
        self.answers: list[tuple[float, int]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, _, body = self.server.get("/pid", timeout=15)
            except Exception as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.answers.append((sent, int(body)))
                self.served_by.add(int(body))
                self.ok += 1
            else:
                self.failures.append(f"status {status}")

    def served_since(self, moment: float) -> set[int]:
        """Pids that answered requests sent after `moment` (time.monotonic()): a response
        still on its way to this thread when the moment was taken is not one of them."""
        return {pid for sent, pid in list(self.answers) if sent > moment}

    def wait_more(self, count: int = 20) -> None:
        target = self.ok + count
        wait_until(lambda: self.ok >= target, timeout=30, message=f"{count} more responses")

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        self.wait_more(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def booted_workers_of(server: Server, master: int) -> list[int]:
    """Workers of master (old or new: they share the output) that have logged their boot."""
    booted = {int(m.group(1)) for line in server.lines[:] for m in [BOOTED_RE.search(line)] if m}
    return sorted(booted & set(children_of(master)))


@contextlib.contextmanager
def stopped_at_the_end(server: Server) -> Iterator[list[int]]:
    """Yield a list the test appends new masters to; TERM then KILL them all by PID."""
    masters: list[int] = []
    try:
        yield masters
    finally:
        leftovers: set[int] = set()
        for pid in masters:
            leftovers |= set(children_of(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in masters:
            with contextlib.suppress(AssertionError):
                wait_until(lambda pid=pid: not pid_alive(pid), timeout=30,
                           message=f"new master {pid} to exit")
        server.stop()
        for pid in [*masters, *leftovers]:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_new_master(server: Server, pidfile: Path, workers: int) -> int:
    """USR2 the server's master; return the new master's pid once its workers serve."""
    new_pidfile = Path(f"{pidfile}.2")
    server.signal(signal.SIGUSR2)
    new = wait_until(lambda: read_pid(new_pidfile), timeout=60,
                     message=f"{new_pidfile}; output:\n{server.output}")
    assert isinstance(new, int) and new != server.pid
    wait_until(lambda: len(booted_workers_of(server, new)) >= workers, timeout=60,
               message=f"the new master's workers; output:\n{server.output}")
    return new


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_usr2_then_term_old_master_loses_no_request(tmp_path: Path, worker_class: str):
    pidfile = tmp_path / "mysite.pid"
    address = str(tmp_path / "notify.sock")
    with notify_socket(address) as systemd:
        server = Server("--workers", "2", "--pid", str(pidfile), "--worker-class", worker_class,
                        env={"NOTIFY_SOCKET": address})
        with stopped_at_the_end(server) as new_masters:
            server.start(wait_workers=2, **DETACHED)
            old = server.pid
            assert systemd.receive()["MAINPID"] == str(old)
            old_workers = set(server.ready_workers())
            with ClientLoop(server) as clients:
                new = start_new_master(server, pidfile, workers=2)
                new_masters.append(new)
                # Under systemd the new master says it is the main process now.
                told = systemd.receive()
                assert (told["READY"], told["MAINPID"]) == ("1", str(new))
                # Both masters live and serve; PIDFILE still names the old one.
                assert read_pid(pidfile) == old
                assert pid_alive(old)
                new_workers = set(booted_workers_of(server, new))
                wait_until(lambda: clients.served_by & new_workers, timeout=30,
                           message="a response from the new master's workers")
                # The same port although --bind asks for port 0: inherited, not bound again.
                assert f"Listening at: http://127.0.0.1:{server.port} (pid {new})" in server.output
                assert b"master [old]" in Path(f"/proc/{old}/cmdline").read_bytes()
                assert b"master [new]" in Path(f"/proc/{new}/cmdline").read_bytes()

                server.signal(signal.SIGTERM)
                assert server.wait_exit() == 0
                wait_until(lambda: read_pid(pidfile) == new, timeout=30,
                           message="the new master to take PIDFILE over")
                assert not Path(f"{pidfile}.2").exists()
                old_gone_at = time.monotonic()
                clients.wait_more(30)
            assert clients.failures == []
            # After the old master went, only the new master's workers answered.
            assert clients.served_since(old_gone_at) <= new_workers
            assert old_workers & clients.served_by
            # The old master's stop was not the service's: no STOPPING=1 reached systemd.
            assert systemd.nothing_within(1.0)
            server.wait_for_line(rf"The old master \(pid: {old}\) has gone")
            # The new master on its own: a HUP still works, TERM removes its pidfile.
            os.kill(new, signal.SIGHUP)
            assert systemd.receive()["RELOADING"] == "1"
            assert systemd.receive(timeout=60)["READY"] == "1"
            os.kill(new, signal.SIGTERM)
            assert systemd.receive()["STOPPING"] == "1"
            wait_until(lambda: not pid_alive(new), timeout=30, message="the new master to stop")
            assert not pidfile.exists()


def test_term_to_the_new_master_rolls_back(tmp_path: Path):
    pidfile = tmp_path / "mysite.pid"
    address = str(tmp_path / "notify.sock")
    with notify_socket(address) as systemd:
        server = Server("--workers", "1", "--pid", str(pidfile), env={"NOTIFY_SOCKET": address})
        with stopped_at_the_end(server) as new_masters:
            server.start(**DETACHED)
            old = server.pid
            assert systemd.receive()["MAINPID"] == str(old)
            with ClientLoop(server) as clients:
                new = start_new_master(server, pidfile, workers=1)
                new_masters.append(new)
                assert systemd.receive()["MAINPID"] == str(new)
                os.kill(new, signal.SIGTERM)
                # The new master hands the main pid back instead of saying STOPPING=1.
                handed_back = systemd.receive()
                assert handed_back["MAINPID"] == str(old)
                assert "STOPPING" not in handed_back
                server.wait_for_line(rf"Upgrade rolled back: the new master \(pid: {new}\) "
                                     r"has stopped")
                clients.wait_more(10)
            assert clients.failures == []
            assert read_pid(pidfile) == old
            assert not Path(f"{pidfile}.2").exists()
            assert b"master [old]" not in Path(f"/proc/{old}/cmdline").read_bytes()
            # The old master can upgrade again.
            new_masters.append(start_new_master(server, pidfile, workers=1))


def test_two_upgrades_in_a_row(tmp_path: Path):
    """The new master, once alone, can itself be upgraded: nothing of the first upgrade stays."""
    pidfile = tmp_path / "mysite.pid"
    server = Server("--workers", "1", "--pid", str(pidfile))
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        with ClientLoop(server) as clients:
            second = start_new_master(server, pidfile, workers=1)
            new_masters.append(second)
            server.signal(signal.SIGTERM)
            server.wait_exit()
            wait_until(lambda: read_pid(pidfile) == second, timeout=30,
                       message="the second master to take PIDFILE over")
            start = len(server.lines)
            os.kill(second, signal.SIGUSR2)
            third = wait_until(lambda: read_pid(Path(f"{pidfile}.2")), timeout=60,
                               message="the third master's PIDFILE.2")
            assert isinstance(third, int)
            new_masters.append(third)
            server.wait_for_line(r"Booted worker", start=start)
            os.kill(second, signal.SIGTERM)
            wait_until(lambda: read_pid(pidfile) == third, timeout=30,
                       message="the third master to take PIDFILE over")
            assert not pid_alive(second)
            clients.wait_more(20)
        assert clients.failures == []


def test_failed_upgrade_leaves_the_old_master_serving(tmp_path: Path):
    settings_dir = tmp_path / "site"
    settings_dir.mkdir()
    module = settings_dir / "upgrade_settings.py"
    module.write_text("from testproject.settings import *  # noqa\n")
    pidfile = tmp_path / "mysite.pid"
    server = Server("--workers", "1", "--pid", str(pidfile), settings="upgrade_settings")
    server.env["PYTHONPATH"] += os.pathsep + str(settings_dir)
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        (worker,) = server.ready_workers()
        pidfile_before = pidfile.read_text()
        module.write_text("raise RuntimeError('new release is broken')\n")
        with ClientLoop(server) as clients:
            start = len(server.lines)
            server.signal(signal.SIGUSR2)
            match = server.wait_for_line(
                r"Upgrade abandoned: the new master \(pid: (\d+)\) exited with code 1; "
                r"this master .* keeps serving", timeout=60, start=start)
            new_masters.append(int(match.group(1)))
            clients.wait_more(10)
        assert clients.failures == []
        assert pidfile.read_text() == pidfile_before
        assert not Path(f"{pidfile}.2").exists()
        assert server.ready_workers() == [worker]
        assert "new release is broken" in server.output
        # Nothing changed: once the release is fixed, the next USR2 upgrades.
        module.write_text("from testproject.settings import *  # noqa\n")
        new = start_new_master(server, pidfile, workers=1)
        new_masters.append(new)
        server.signal(signal.SIGTERM)
        server.wait_exit()
        wait_until(lambda: read_pid(pidfile) == new, timeout=30,
                   message="the new master to take PIDFILE over")


def test_new_master_whose_workers_cannot_boot_never_writes_pidfile_2(tmp_path: Path):
    """PIDFILE.2 means "the new master serves": a runbook that waits for it never TERMs the
    old master for a new one that cannot serve."""
    settings_dir = tmp_path / "site"
    settings_dir.mkdir()
    module = settings_dir / "upgrade_app_settings.py"
    module.write_text("from testproject.settings import *  # noqa\n")
    pidfile = tmp_path / "mysite.pid"
    new_pidfile = Path(f"{pidfile}.2")
    server = Server("--workers", "1", "--pid", str(pidfile), settings="upgrade_app_settings")
    server.env["PYTHONPATH"] += os.pathsep + str(settings_dir)
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        (worker,) = server.ready_workers()
        # The settings load, the project's WSGI module does not: the new master's arbiter
        # starts, its first worker fails to boot.
        module.write_text("from testproject.settings_broken_app import *  # noqa\n")
        seen_pidfile_2 = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if new_pidfile.exists():
                    seen_pidfile_2.set()
                done.wait(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            start = len(server.lines)
            server.signal(signal.SIGUSR2)
            match = server.wait_for_line(
                r"Upgrade abandoned: the new master \(pid: (\d+)\) exited with code \d+",
                timeout=90, start=start)
            new_masters.append(int(match.group(1)))
        finally:
            done.set()
            watcher.join(timeout=5)
        server.wait_for_line(r"Worker failed to boot", start=start)
        assert not seen_pidfile_2.is_set()
        assert read_pid(pidfile) == server.pid
        assert server.ready_workers() == [worker]
        assert server.get("/hello")[0] == 200


def test_usr2_then_winch_then_term(tmp_path: Path):
    pidfile = tmp_path / "mysite.pid"
    server = Server("--workers", "2", "--pid", str(pidfile))
    with stopped_at_the_end(server) as new_masters:
        server.start(wait_workers=2, **DETACHED)
        old_workers = server.ready_workers()
        with ClientLoop(server) as clients:
            new = start_new_master(server, pidfile, workers=2)
            new_masters.append(new)
            # A second USR2 to either master while both live changes nothing.
            server.signal(signal.SIGUSR2)
            server.wait_for_line(r"USR2 ignored: a new master \(pid: \d+\) is already running")
            os.kill(new, signal.SIGUSR2)
            server.wait_for_line(r"USR2 ignored: the old master \(pid: \d+\) is still running")

            server.signal(signal.SIGWINCH)
            wait_until(lambda: not any(pid_alive(pid) for pid in old_workers), timeout=30,
                       message="the old master's workers to exit after WINCH")
            assert pid_alive(server.pid)
            # No worker, only the new master (and the old master's zygote).
            assert [p for p in children_of(server.pid) if not is_zygote(p)] == [new]
            new_workers = set(booted_workers_of(server, new))
            old_gone_at = time.monotonic()
            clients.wait_more(20)
            assert clients.served_since(old_gone_at) <= new_workers

            server.signal(signal.SIGTERM)
            assert server.wait_exit() == 0
            wait_until(lambda: read_pid(pidfile) == new, timeout=30,
                       message="the new master to take PIDFILE over")
            clients.wait_more(20)
        assert clients.failures == []


def _get_over_unix(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(path)
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_upgrade_keeps_a_unix_socket_file_until_the_last_master_stops(tmp_path: Path):
    path = str(tmp_path / "mysite.sock")
    pidfile = tmp_path / "mysite.pid"
    server = Server("--workers", "1", "--pid", str(pidfile), bind=f"unix:{path}")
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        new = start_new_master(server, pidfile, workers=1)
        new_masters.append(new)
        server.signal(signal.SIGTERM)
        server.wait_exit()
        # The old master's stop must not remove the file the new master serves on.
        assert os.path.exists(path)
        assert _get_over_unix(path).startswith(b"HTTP/1.1 200")
        wait_until(lambda: read_pid(pidfile) == new, timeout=30,
                   message="the new master to take PIDFILE over")
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not pid_alive(new), timeout=30, message="the new master to stop")
        # The last master to stop removes it.
        assert not os.path.exists(path)


MANAGE_PY = """\
import os
import sys

print("manage.py of {release}", flush=True)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


def test_upgrade_follows_a_current_symlink_to_the_new_release(tmp_path: Path):
    """`python manage.py runprefork` from /srv/site/current, a symlink a deploy repoints: the
    new master runs the same relative command from the symlink, so from the new release."""
    for release in ("release1", "release2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "manage.py").write_text(MANAGE_PY.format(release=release))
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "release1")
    pidfile = tmp_path / "mysite.pid"
    server = Server(cwd=current, env={"PWD": str(current),
                                      "DJANGO_SETTINGS_MODULE": "testproject.settings"})
    server.cmd = [sys.executable, "manage.py", "runprefork", "--bind", "127.0.0.1:0",
                  "--workers", "1", "--pid", str(pidfile)]
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        assert "manage.py of release1" in server.output
        current.unlink()
        current.symlink_to(tmp_path / "release2")  # the deploy
        new = start_new_master(server, pidfile, workers=1)
        new_masters.append(new)
        assert "manage.py of release2" in server.output
        assert Path(f"/proc/{new}/cwd").resolve() == (tmp_path / "release2").resolve()
        server.signal(signal.SIGTERM)
        server.wait_exit()
        wait_until(lambda: read_pid(pidfile) == new, timeout=30,
                   message="the new master to take PIDFILE over")
        assert server.get("/hello")[0] == 200


def test_inherited_sockets_are_adopted_not_bound(monkeypatch: pytest.MonkeyPatch):
    from django_prefork.server.sockets import INHERIT_ENV_VAR, BindError, inherited_listeners

    listening = socket.create_server(("127.0.0.1", 0))
    idle = socket.socket()
    try:
        monkeypatch.setenv(INHERIT_ENV_VAR, f'[[{listening.fileno()}, "127.0.0.1:0"]]')
        (listener,) = inherited_listeners()
        assert listener.address == listening.getsockname()
        assert listener.spec == "127.0.0.1:0" and not listener.owns_path
        assert INHERIT_ENV_VAR not in os.environ  # read once, never passed on to children
        listener.sock.detach()  # the test's own socket object closes the fd
        monkeypatch.setenv(INHERIT_ENV_VAR, f'[[{idle.fileno()}, "127.0.0.1:8000"]]')
        with pytest.raises(BindError, match=r"127.0.0.1:8000 \(fd \d+\): it is not a listening"):
            inherited_listeners()
        assert idle.fileno() >= 0  # left open: not ours
    finally:
        listening.close()
        idle.close()


def test_a_bad_inherited_socket_is_one_line_and_a_non_zero_exit():
    server = Server(env={"DJANGO_PREFORK_INHERIT_FDS": "[[987, \"127.0.0.1:8000\"]]"})
    try:
        server.start(wait_workers=None)
        assert server.wait_exit() != 0
        server.wait_for_line(r"Could not use the inherited socket 127.0.0.1:8000 \(fd 987\)")
    finally:
        server.stop()
