"""Run `runprefork` as a real subprocess for the integration tests, and clean up after it.

Every process started here is stopped by PID (the master and any child it left), and every
wait has a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
LISTEN_RE = re.compile(r"Listening at: (http://(\S+):(\d+)|unix:(\S+)) \(pid (\d+)\)")
BOOTED_RE = re.compile(r"Booted worker with pid: (\d+)")
#: The master's line for a worker it knows of: a zygote's reports (its watch list among them)
#: come before it, in order, on the same socket.
BOOTING_RE = re.compile(r"Booting worker with pid: (\d+)")


def wait_until(predicate: Callable[[], object], timeout: float = 15.0,
               interval: float = 0.02, message: str = "condition") -> object:
    """Poll predicate until it returns something truthy, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is pid, read from /proc (no dependency, no names)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parens: fields resume after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return sorted(found)


def is_zygote(pid: int) -> bool:
    """The master's zygote names itself so in its process title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"zygote" in f.read()
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


class Server:
    """One `runprefork` process: start, read its output, talk to it, stop it."""

    def __init__(self, *args: str, settings: str = "testproject.settings",
                 manage_py: bool = False, env: dict[str, str] | None = None,
                 bind: str | None = "127.0.0.1:0", cwd: Path | None = None) -> None:
        if manage_py:
            cmd = [sys.executable, str(REPO_ROOT / "manage.py"), "runprefork"]
        else:
            cmd = [sys.executable, "-m", "django", "runprefork", f"--settings={settings}"]
        if bind:
            cmd += ["--bind", bind]
        self.cmd = [*cmd, *args]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
        self.env["PYTHONUNBUFFERED"] = "1"
        for name in ("PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
            self.env.pop(name, None)
        if manage_py:  # pytest-django exported the test project's settings module
            self.env["DJANGO_SETTINGS_MODULE"] = "demo_project.settings"
        if env:
            self.env.update(env)
        self.cwd = cwd or REPO_ROOT
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lines_changed = threading.Condition()
        self.host = "127.0.0.1"
        self.port = 0
        self.unix_path: str | None = None
        self._known_children: set[int] = set()
        self._eof = False  # the reader has read the last line the server will ever print
        self._reader: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self, wait_workers: int | None = 1, timeout: float = 30.0,
              **popen_kwargs: Any) -> Server:
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            **popen_kwargs,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if wait_workers:
            match = self.wait_for_line(LISTEN_RE, timeout=timeout)
            if match.group(4):
                self.unix_path = match.group(4)
            else:
                self.host = match.group(2).strip("[]")
                self.port = int(match.group(3))
            self.wait_booted(wait_workers, timeout=timeout)
        return self

    def _read_output(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._lines_changed:
                self.lines.append(line.rstrip("\n"))
                self._lines_changed.notify_all()
        with self._lines_changed:
            self._eof = True
            self._lines_changed.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        with self._lines_changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout: float = 15.0,
                      start: int = 0) -> re.Match[str]:
        """Wait for an output line (from index start on) matching pattern; return the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._lines_changed:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                # Once the output has ended no line can come (an exited master's last lines
                # may still be on their way until then).
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"no line matching {regex.pattern!r} within {timeout}s; "
                        f"exit={self.proc.poll() if self.proc else None}; output:\n"
                        + "\n".join(self.lines[-60:]))
                self._lines_changed.wait(min(remaining, 0.2))

    def wait_booted(self, count: int, timeout: float = 30.0) -> None:
        wait_until(lambda: len(self.ready_workers()) >= count, timeout=timeout,
                   message=f"{count} booted workers; output:\n{self.output}")

    def ready_workers(self) -> list[int]:
        """Live children of the master that have logged their boot, and that the master has
        logged it knows of (a worker may boot before the master reads its zygote's report)."""
        lines = self.lines[:]
        booted = {int(m.group(1)) for line in lines for m in [BOOTED_RE.search(line)] if m}
        known = {int(m.group(1)) for line in lines for m in [BOOTING_RE.search(line)] if m}
        children = set(children_of(self.pid))
        self._known_children |= children
        return sorted(booted & known & children)

    def worker_pids(self) -> list[int]:
        """Children of the master that are workers (not a zygote)."""
        pids = children_of(self.pid)
        self._known_children |= set(pids)
        return [pid for pid in pids if not is_zygote(pid)]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the master to exit, and for its output to be read to the end (for 1 s at
        most: a process it left behind, as a binary upgrade's new master, keeps the pipe
        open; what the master wrote before exiting is read within that second)."""
        assert self.proc is not None
        status = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=1)
        return status

    def stop(self) -> None:
        """TERM the master, then KILL whatever it or its workers left, by PID."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._known_children |= set(children_of(self.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self._known_children:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def get(self, path: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kwargs)  # type: ignore[arg-type]

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes, read until the server closes; return everything it sent."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)


@contextlib.contextmanager
def running(*args: str, wait_workers: int | None = 1, **kwargs: object) -> Iterator[Server]:
    server = Server(*args, **kwargs)  # type: ignore[arg-type]
    try:
        server.start(wait_workers=wait_workers)
        yield server
    finally:
        server.stop()


class ClientLoop:
    """Requests a path in a loop from a thread, each on a new connection, counting successes
    and failures (any exception or a status other than 200)."""

    def __init__(self, server: Server, path: str = "/hello") -> None:
        self.server = server
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, _ = self.server.get(self.path, timeout=10)
            except Exception as exc:
                self.failures.append(repr(exc))
            else:
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}")

    def wait_for_more(self, count: int = 5, timeout: float = 30.0) -> None:
        """Wait until `count` more requests have succeeded."""
        target = self.ok + count
        wait_until(lambda: self.ok >= target, timeout=timeout,
                   message=f"{count} more successful requests")

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        wait_until(lambda: self.ok >= 3, message="the client loop to get going")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unix_get(path: str, target: str = "/hello", timeout: float = 10.0) -> tuple[int, bytes]:
    """GET target over the unix socket at path; return (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                     .encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def descendants_of(pid: int) -> list[int]:
    """pid's children, their children, and so on (from /proc)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = [child for parent in frontier for child in children_of(parent)]
        found.extend(children)
        frontier = children
    return found


def pss_kb(pid: int) -> int:
    """Proportional set size of one process in kB (/proc/PID/smaps_rollup); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_kb(pid: int) -> int:
    """PSS of pid and every descendant: the whole server (master, zygotes, workers)."""
    return sum(pss_kb(p) for p in [pid, *descendants_of(pid)])
