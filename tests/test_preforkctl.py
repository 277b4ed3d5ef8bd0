"""`manage.py preforkctl` against real runprefork masters over their control sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server import REPO_ROOT, TESTS_DIR, Server, pid_alive, running, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def ctl(*args: str, env: dict[str, str] | None = None,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `preforkctl ARGS` as an operator would; its exit code and output."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "django", "preforkctl", "--settings=testproject.settings",
         *args], cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL)


def status_json(*args: str, env: dict[str, str] | None = None) -> dict:
    done = ctl("status", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A private XDG_RUNTIME_DIR for the server and preforkctl alike."""
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


def _socket_at(runtime: Path, pid: int) -> Path:
    return runtime / "django-prefork" / f"{pid}.ctl"


def _slow_request(server: Server, seconds: float, mark: Path,
                  release: Path | None = None) -> threading.Thread:
    """A request that runs `seconds`, or, with release, until that file exists (at most 60 s:
    preforkctl's own start-up may take seconds on a loaded machine)."""
    result: list[object] = []
    query = f"s={seconds}&mark={mark}" if release is None else \
        f"s=60&release={release}&mark={mark}"

    def go() -> None:
        result.append(server.get(f"/sleep?{query}", timeout=90)[0])

    thread = threading.Thread(target=go, daemon=True)
    thread.result = result  # type: ignore[attr-defined]
    thread.start()
    wait_until(mark.exists, timeout=30, message="the slow request to reach the view")
    return thread


def test_status_shows_the_request_in_progress_with_its_duration(runtime_dir: Path,
                                                                tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--workers", "2", env=env, wait_workers=2) as server:
        for _ in range(3):
            assert server.get("/hello")[0] == 200
        release = tmp_path / "release"
        thread = _slow_request(server, 8, tmp_path / "mark", release)
        busy = int((tmp_path / "mark").read_text())

        def shows_duration() -> re.Match[str] | None:
            done = ctl("status", "--pid", str(server.pid), env=env)
            assert done.returncode == 0, done.stderr
            # The line is cut at 128 bytes (metrics/board.py): the query's paths are long.
            return re.search(rf"^{busy}\s+\S+\s+\d+\s+[\d.]+ MiB\s+GET /sleep\?s=60\S* "
                             r"(?:HTTP/1\.1 )?\((\d+\.\d)s\)$", done.stdout, re.M)

        wait_until(shows_duration, timeout=20, message="a duration in the table")
        # The same as JSON: the duration grows while the request runs.
        first = status_json("--pid", str(server.pid), env=env)
        worker = next(w for w in first["workers"] if w["pid"] == busy)
        (serving,) = worker["serving"]
        assert serving["request"].startswith("GET /sleep?s=60")
        later = status_json("--pid", str(server.pid), env=env)
        (still,) = next(w for w in later["workers"] if w["pid"] == busy)["serving"]
        assert still["seconds"] > serving["seconds"] > 0
        assert sorted(w["pid"] for w in first["workers"]) == sorted(server.worker_pids())
        assert first["totals"]["requests"] == 3
        assert first["totals"]["in_flight"] == 1
        assert first["totals"]["workers"] == 2
        assert first["totals"]["pss"] > 0 and worker["pss"] > 0
        assert first["master"]["pid"] == server.pid
        assert later["master"]["age"] > first["master"]["age"]
        release.touch()
        thread.join(30)
        assert thread.result == [200]  # type: ignore[attr-defined]
        # Done: nothing shown as being served, and the request counted.
        after = status_json("--pid", str(server.pid), env=env)
        assert all(not w["serving"] for w in after["workers"])
        assert after["totals"]["requests"] == 4


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_status_shows_concurrent_requests_of_one_worker(worker_class: str, runtime_dir: Path,
                                                        tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--workers", "1", "-k", worker_class, "--threads", "4", env=env) as server:
        release = tmp_path / "release"
        threads = [_slow_request(server, 3, tmp_path / f"mark{i}", release) for i in range(2)]
        answer = status_json("--pid", str(server.pid), env=env)
        release.touch()
        (worker,) = answer["workers"]
        assert worker["in_flight"] == 2
        shown = len(worker["serving"])
        # A thread per request (gthread: a slot each); gevent's greenlets share one slot.
        assert shown == (2 if worker_class == "gthread" else 1)
        assert all(s["request"].startswith("GET /sleep?s=60") for s in worker["serving"])
        for thread in threads:
            thread.join(30)


def test_gevent_worker_uses_one_board_slot_however_many_connections(
        runtime_dir: Path) -> None:
    """Each greenlet used to claim a slot of its own: 256 connections filled the board and
    the next worker was not counted."""
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--workers", "1", "-k", "gevent", env=env) as server:
        for _ in range(260):
            assert server.get("/hello")[0] == 200
        assert ctl("add-worker", "--pid", str(server.pid), env=env).returncode == 0
        server.wait_booted(2)
        answer = status_json("--pid", str(server.pid), env=env)
        assert answer["totals"]["requests"] == 260
        assert "Metrics board full" not in server.output


def test_add_worker_and_remove_worker_change_the_worker_count(runtime_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--workers", "1", env=env) as server:
        done = ctl("add-worker", "--pid", str(server.pid), env=env)
        assert done.returncode == 0, done.stderr
        assert "TTIN" in done.stdout
        wait_until(lambda: len(server.worker_pids()) == 2, timeout=30, message="2 workers")
        wait_until(lambda: status_json("--pid", str(server.pid), env=env)["master"][
            "workers_wanted"] == 2, timeout=10)
        done = ctl("remove-worker", "--pid", str(server.pid), env=env)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: len(server.worker_pids()) == 1, timeout=30, message="1 worker")


def test_reload_replaces_the_workers(runtime_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--workers", "2", env=env, wait_workers=2) as server:
        old = set(server.worker_pids())
        done = ctl("reload", "--pid", str(server.pid), env=env)
        assert done.returncode == 0, done.stderr

        def replaced() -> bool:
            workers = status_json("--pid", str(server.pid), env=env)["workers"]
            pids = {w["pid"] for w in workers}
            return len(pids) == 2 and not pids & old and all(w["booted"] for w in workers)

        wait_until(replaced, timeout=60, message="a new generation of 2 workers")
        assert status_json("--pid", str(server.pid), env=env)["master"]["generation"] == 1
        assert server.get("/hello")[0] == 200


def test_stop_stops_the_master_and_removes_the_socket(runtime_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running(env=env) as server:
        path = _socket_at(runtime_dir, server.pid)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        done = ctl("stop", "--pid", str(server.pid), env=env)
        assert done.returncode == 0, done.stderr
        assert "TERM" in done.stdout
        assert server.wait_exit(30) == 0
        assert "Handling signal: term" in server.output
        assert not path.exists()


def test_stop_quick_sends_quit(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    with running("--control-socket", str(path)) as server:
        done = ctl("stop", "--quick", "--control-socket", str(path))
        assert done.returncode == 0, done.stderr
        assert server.wait_exit(30) == 0
        assert "Handling signal: quit" in server.output
        assert not path.exists()


def test_control_socket_is_owner_only_by_default(runtime_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running(env=env) as server:
        info = os.lstat(_socket_at(runtime_dir, server.pid))
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime_dir / "django-prefork").st_mode) == 0o700


def test_control_socket_mode_and_path_are_honoured(tmp_path: Path, runtime_dir: Path) -> None:
    path = tmp_path / "app.ctl"
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--control-socket", str(path), "--control-socket-mode", "0660",
                 env=env) as server:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
        # --pid still finds it: a link at the per-pid place.
        link = _socket_at(runtime_dir, server.pid)
        assert os.readlink(link) == str(path)
        assert status_json("--pid", str(server.pid), env=env)["master"]["pid"] == server.pid
        assert status_json("--control-socket", str(path))["master"]["control_socket"] == (
            str(path))
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        assert not path.exists() and not os.path.lexists(link)


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.ctl"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a SIGKILLed master leaves
    with running("--control-socket", str(path)) as server:
        assert status_json("--control-socket", str(path))["master"]["pid"] == server.pid


def test_a_socket_in_use_by_another_master_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "taken.ctl"
    with running("--control-socket", str(path)):
        second = Server("--control-socket", str(path))
        try:
            second.start(wait_workers=None)
            assert second.wait_exit(30) != 0
            assert "is in use by another running server" in second.output
        finally:
            second.stop()


def test_no_control_socket(runtime_dir: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running("--no-control-socket", env=env) as server:
        assert not _socket_at(runtime_dir, server.pid).exists()
        done = ctl("status", "--pid", str(server.pid), env=env)
        assert done.returncode == 1
        assert done.stderr.strip().count("\n") == 0
        assert "has no control socket" in done.stderr


def test_status_json_parses_and_the_pidfile_finds_the_master(runtime_dir: Path,
                                                             tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    pidfile = tmp_path / "app.pid"
    with running("--pid", str(pidfile), env=env) as server:
        answer = status_json("--pidfile", str(pidfile), env=env)
        assert answer["ok"] is True
        assert set(answer) >= {"master", "workers", "totals"}
        assert answer["master"]["pid"] == server.pid
        assert {"pid", "age", "requests", "pss", "serving"} <= set(answer["workers"][0])


def _dead_pid() -> int:
    pid = 4_000_000
    while pid_alive(pid) or os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.parametrize("args, words", [
    (["--pid", "DEAD"], "no process with pid"),
    (["--pid", "1"], "has no control socket"),
    (["--pidfile", "/nonexistent/app.pid"], "cannot read the pidfile"),
    (["--control-socket", "/nonexistent/app.ctl"], "no control socket at"),
])
def test_errors_are_one_line_and_a_non_zero_exit(args: list[str], words: str) -> None:
    args = [str(_dead_pid()) if a == "DEAD" else a for a in args]
    done = ctl("status", *args)
    assert done.returncode == 1
    assert words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_refusing_socket_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.ctl"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    done = ctl("status", "--control-socket", str(path))
    assert done.returncode == 1
    assert "refuses connections" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied_is_one_line(tmp_path: Path) -> None:
    from django_prefork.server.control import ControlClientError, ask

    path = tmp_path / "app.ctl"
    with running("--control-socket", str(path)):
        os.seteuid(65534)  # nobody, for the connect only: the socket is 0600, root's
        try:
            with pytest.raises(ControlClientError, match="permission denied") as caught:
                ask(str(path), {"command": "status"})
        finally:
            os.seteuid(0)
        assert "\n" not in str(caught.value)


def test_bad_control_socket_settings_are_one_line(tmp_path: Path) -> None:
    for args, words in ((["--control-socket-mode", "0400"], "--control-socket-mode"),
                        (["--control-socket", "/x/" + "y" * 120], "--control-socket")):
        server = Server(*args)
        try:
            server.start(wait_workers=None)
            assert server.wait_exit(30) != 0
            assert words in server.output and "Fix:" in server.output
            assert "Traceback" not in server.output
        finally:
            server.stop()


def test_a_bad_request_gets_an_answer_and_the_master_lives_on(tmp_path: Path) -> None:
    path = tmp_path / "app.ctl"
    with running("--control-socket", str(path)) as server:
        for raw in (b"not json\n", b'{"command": "explode"}\n', b"[1]\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(raw)
                answer = json.loads(sock.makefile("rb").readline())
            assert answer["ok"] is False and answer["error"]
        # A client that connects and says nothing does not hold the master.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(str(path))
            assert status_json("--control-socket", str(path))["master"]["pid"] == server.pid
        assert server.get("/hello")[0] == 200


def test_reopen_logs_is_usr1(tmp_path: Path) -> None:
    path = tmp_path / "app.ctl"
    with running("--control-socket", str(path)) as server:
        done = ctl("reopen-logs", "--control-socket", str(path))
        assert done.returncode == 0, done.stderr
        assert "USR1" in done.stdout
        server.wait_for_line("Handling signal: usr1", timeout=20)


@pytest.mark.parametrize("explicit", [False, True])
def test_upgrade_starts_a_new_master_each_reachable(explicit: bool, tmp_path: Path,
                                                    runtime_dir: Path) -> None:
    from test_upgrade import DETACHED, booted_workers_of, read_pid, stopped_at_the_end

    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    pidfile = tmp_path / "app.pid"
    path = tmp_path / "app.ctl"
    args = ["--pid", str(pidfile), *(["--control-socket", str(path)] if explicit else [])]
    server = Server(*args, env=env)
    with stopped_at_the_end(server) as new_masters:
        server.start(**DETACHED)
        old = server.pid
        done = ctl("upgrade", "--pidfile", str(pidfile), env=env)
        assert done.returncode == 0, done.stderr
        assert "USR2" in done.stdout
        new = wait_until(lambda: read_pid(Path(f"{pidfile}.2")), timeout=60,
                         message=f"PIDFILE.2; output:\n{server.output}")
        assert isinstance(new, int) and new != old
        new_masters.append(new)
        wait_until(lambda: booted_workers_of(server, new), timeout=60,
                   message=f"the new master's worker; output:\n{server.output}")
        assert read_pid(pidfile) == old
        assert status_json("--pid", str(new), env=env)["master"]["pid"] == new
        if explicit:
            # The new master took the path over; the old one's --pid link now leads to
            # the new master, which says so instead of answering for the old one.
            assert status_json("--control-socket", str(path))["master"]["pid"] == new
            refused = ctl("status", "--pid", str(old), env=env)
            assert refused.returncode == 1
            assert f"this is master {new}, not {old}" in refused.stderr
            os.kill(old, signal.SIGTERM)
        else:
            assert status_json("--pid", str(old), env=env)["master"]["pid"] == old
            assert ctl("stop", "--pid", str(old), env=env).returncode == 0
        assert server.wait_exit(30) == 0
        # The old master left the new one's socket in place.
        wait_until(lambda: read_pid(pidfile) == new, timeout=30, message="PIDFILE taken over")
        target = ["--control-socket", str(path)] if explicit else ["--pidfile", str(pidfile)]
        assert status_json(*target, env=env)["master"]["pid"] == new


def test_an_unsafe_default_directory_is_not_used(runtime_dir: Path) -> None:
    """Others may write to it: someone could plant a socket there. The server still
    starts (the operator asked for nothing), without a control socket, and says so."""
    unsafe = runtime_dir / "django-prefork"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    with running(env=env) as server:
        assert "No control socket (preforkctl cannot reach this master)" in server.output
        assert "not a directory of mode 0700 owned by this user" in server.output
        assert not _socket_at(runtime_dir, server.pid).exists()
        assert server.get("/hello")[0] == 200
