"""--daemon through `manage.py runprefork`: the command returns, the daemon serves.

Every process the daemon starts is found through /proc from its pid and stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

from server import Server, descendants_of, free_port, pid_alive, wait_until


def _session_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[3])


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _get(port: int, path: str = "/hello") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _serves(port: int) -> bool:
    try:
        return _get(port) == 200
    except OSError:
        return False


def _stop_everything(proc: subprocess.Popen[str], pidfiles: list[Path], known: set[int]) -> None:
    """Cleanup: the command, whatever the pidfiles name and their descendants, and every pid
    seen during the test, each killed by PID if still alive."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for path in pidfiles:
        pid = _read_pid(path)
        if pid and pid_alive(pid):
            known |= {pid, *descendants_of(pid)}
    for pid in known:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_daemon_detaches_serves_and_stops(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "prefork.pid"
    error_log = tmp_path / "error.log"
    server = Server("--daemon", "--pid", str(pidfile), "--error-logfile", str(error_log),
                    "--workers", "2", bind=f"127.0.0.1:{port}")
    started = time.monotonic()
    proc = subprocess.Popen(server.cmd, cwd=server.cwd, env=server.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    known: set[int] = set()
    daemon: int | None = None
    try:
        # Returns once detached; the pipes close as the daemon's stdio went to /dev/null.
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        assert time.monotonic() - started < 30
        daemon = wait_until(lambda: _read_pid(pidfile), timeout=30,
                            message="the daemon's pidfile")  # type: ignore[assignment]
        assert isinstance(daemon, int)
        assert daemon != proc.pid and pid_alive(daemon)
        # Detached: not in our session (setsid), and not a session leader either.
        assert _session_of(daemon) != os.getsid(0)
        assert _session_of(daemon) != daemon
        with open(f"/proc/{daemon}/stat", "rb") as f:
            stat = f.read()
        assert int(stat[stat.rfind(b")") + 2:].split()[1]) != os.getpid()
        wait_until(lambda: _serves(port), timeout=30, message="the daemon to serve")
        known |= set(descendants_of(daemon))
        # Its log went to the error log file, with its own pid in "Listening at".
        wait_until(lambda: f"(pid {daemon})" in error_log.read_text(), timeout=20,
                   message="'Listening at' with the daemon's pid in the error log")
        os.kill(daemon, signal.SIGTERM)
        wait_until(lambda: not pid_alive(daemon), timeout=40, message="the daemon to stop")
        assert not pidfile.exists()
    finally:
        if daemon and pid_alive(daemon):
            known |= {daemon, *descendants_of(daemon)}
        _stop_everything(proc, [pidfile], known)


def test_daemon_refused_under_systemd(tmp_path: Path) -> None:
    server = Server("--daemon", env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    proc = subprocess.run(server.cmd, cwd=server.cwd, env=server.env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "--daemon" in lines[0] and "NOTIFY_SOCKET" in lines[0] and "Fix:" in lines[0]


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def test_usr2_to_a_daemon_does_not_detach_the_new_master(tmp_path: Path) -> None:
    """The new master of a binary upgrade runs the daemon's command line, --daemon included:
    it must stay the old master's child (which watches it), and take the pidfile over."""
    port = free_port()
    pidfile = tmp_path / "prefork.pid"
    error_log = tmp_path / "error.log"
    server = Server("--daemon", "--pid", str(pidfile), "--error-logfile", str(error_log),
                    bind=f"127.0.0.1:{port}")
    proc = subprocess.Popen(server.cmd, cwd=server.cwd, env=server.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    known: set[int] = set()
    try:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        old = wait_until(lambda: _read_pid(pidfile), timeout=30, message="the pidfile")
        assert isinstance(old, int)
        known.add(old)
        wait_until(lambda: _serves(port), timeout=30, message="the daemon to serve")
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: _read_pid(Path(f"{pidfile}.2")), timeout=60,
                         message="the new master's PIDFILE.2")
        assert isinstance(new, int) and new != old
        known.add(new)
        assert _parent_of(new) == old
        # The process the old master started is the new master itself, not a detaching
        # parent that exited (which the old master would take for a failed upgrade).
        log = error_log.read_text()
        assert f"Upgrade: started a new master (pid: {new})" in log, log
        assert "Upgrade abandoned" not in log and "rolled back" not in log
        known |= set(descendants_of(old))
        os.kill(old, signal.SIGTERM)
        wait_until(lambda: _read_pid(pidfile) == new, timeout=40,
                   message="the new master to take the pidfile over")
        assert pid_alive(new) and not pid_alive(old)
        assert _serves(port)
        known |= set(descendants_of(new))
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not pid_alive(new), timeout=40, message="the new master to stop")
        assert not pidfile.exists()
    finally:
        _stop_everything(proc, [pidfile, Path(f"{pidfile}.2")], known)
