"""user, group, initgroups and worker_tmp_dir, through `manage.py runprefork` as a subprocess.

The tests that drop privileges need root (skipped otherwise). On the dev machines the Python
interpreters live under /root, which only root may enter, so a worker running as nobody could
not import the standard library: the `traversable` fixture lets others traverse every
directory from / down to the interpreter, the venv and the worktree for the test, and gives
back the exact previous modes afterwards.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import REPO_ROOT, Server, children_of, is_zygote, wait_until

NOBODY = pwd.getpwnam("nobody") if "nobody" in {p.pw_name for p in pwd.getpwall()} else None


def _nobody_group() -> str:
    """nogroup where it exists (Debian), else the numeric gid of nobody's own group."""
    try:
        grp.getgrnam("nogroup")
        return "nogroup"
    except KeyError:
        assert NOBODY is not None
        return str(NOBODY.pw_gid)


def _expected_gid(group: str) -> int:
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or NOBODY is None,
    reason="dropping privileges needs the tests to run as root, with a 'nobody' user")


def ids_of(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process, from /proc/<pid>/status; all four must agree."""
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]  # type: ignore[union-attr]
    gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()]  # type: ignore[union-attr]
    assert len(set(uids)) == 1 and len(set(gids)) == 1, status
    return uids[0], gids[0]


def groups_of(pid: int) -> set[int]:
    """Supplementary groups of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Groups:"):
                return {int(x) for x in line.split()[1:]}
    raise AssertionError(f"no Groups line for {pid}")


def _paths_to_open() -> list[Path]:
    """Every directory a fresh interpreter of ours reads from: the interpreter, the venv,
    sys.path, the worktree."""
    roots = {Path(os.path.realpath(sys.executable)).parent, Path(sys.prefix),
             Path(sys.base_prefix), Path(os.path.realpath(sys.base_prefix)), REPO_ROOT}
    roots.update(Path(os.path.realpath(p)) for p in sys.path if p and os.path.isdir(p))
    return sorted(roots)


@pytest.fixture
def traversable() -> Iterator[None]:
    """o+x on each directory from / down to what the workers import (o+r too on the
    directories they list, the sys.path entries); the previous modes restored after."""
    changed: dict[Path, int] = {}
    try:
        for root in _paths_to_open():
            for directory in [*reversed(root.parents), root]:
                mode = stat.S_IMODE(directory.stat().st_mode)
                wanted = mode | stat.S_IXOTH
                if directory == root:
                    wanted |= stat.S_IROTH
                if wanted != mode and directory not in changed:
                    changed[directory] = mode
                    os.chmod(directory, wanted)
        yield
    finally:
        for directory, mode in changed.items():
            os.chmod(directory, mode)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the workers' user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="prefork-priv-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _zygotes(server: Server) -> list[int]:
    return [pid for pid in children_of(server.pid) if is_zygote(pid)]


def _access_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@needs_root
@pytest.mark.parametrize("mode", ["zygote", "preload", "exec"])
def test_workers_run_as_user_and_group(traversable: None, shared_dir: Path, mode: str) -> None:
    """zygote: the default; preload: workers forked by the master; exec: each worker a
    fresh interpreter (the path of platforms without a child subreaper)."""
    assert NOBODY is not None
    group = _nobody_group()
    want = (NOBODY.pw_uid, _expected_gid(group))
    access_log = shared_dir / "access.log"
    extra = ["--preload"] if mode == "preload" else []
    env = {"DJANGO_PREFORK_NO_ZYGOTE": "1"} if mode == "exec" else None
    server = Server("--user", "nobody", "--group", group, "--workers", "2", "--timeout", "2",
                    "--access-logfile", str(access_log), *extra, env=env)
    with server:
        server.start(wait_workers=2)
        assert ids_of(server.pid) == (0, 0)  # the master keeps its privileges
        workers = server.ready_workers()
        for pid in workers:
            assert ids_of(pid) == want
            assert groups_of(pid) == set()  # root's supplementary groups are not kept
        zygotes = _zygotes(server)
        if mode == "zygote":
            assert zygotes, "no zygote with --preload off"
        for pid in zygotes:  # the process that imports the project is not root
            assert ids_of(pid) == want
        # The log file was created by the master (root) and handed to the workers' user.
        assert (access_log.stat().st_uid, access_log.stat().st_gid) == want

        # Heartbeats work: requests that keep a worker busy for half the timeout, for three
        # timeouts, and no worker is killed or replaced.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            status, _, body = server.get("/sleep?s=1", timeout=20)
            assert status == 200, body
        assert server.ready_workers() == workers
        assert "WORKER TIMEOUT" not in server.output
        assert "Worker failed to boot" not in server.output

        # USR1 after a logrotate-style rename: the master reopens (creating the file as root),
        # hands it over, and the workers reopen it too.
        rotated = shared_dir / "access.log.1"
        access_log.rename(rotated)
        start = len(server.lines)
        server.signal(signal.SIGUSR1)
        wait_until(access_log.exists, timeout=20, message="the master to reopen the access log")
        wait_until(lambda: "Handling signal: usr1" in "\n".join(server.lines[start:]),
                   timeout=20, message="USR1 handled")

        def served_into_new_file() -> bool:
            status, _, _ = server.get("/hello?after-usr1", timeout=20)
            assert status == 200
            return any("after-usr1" in line for line in _access_lines(access_log))

        wait_until(served_into_new_file, timeout=20, interval=0.2,
                   message="a request logged in the reopened access log")
        assert "cannot reopen" not in server.output
        assert (access_log.stat().st_uid, access_log.stat().st_gid) == want

        # HUP: a new generation, its workers (and zygote) the same user.
        start = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for_line("Reload complete", timeout=60, start=start)

        def new_workers() -> list[int]:
            now = server.ready_workers()
            return now if len(now) == 2 and not set(now) & set(workers) else []

        replaced = wait_until(new_workers, timeout=30, message="two new workers after HUP")
        for pid in replaced:  # type: ignore[union-attr]
            assert ids_of(pid) == want
        for pid in _zygotes(server):
            assert ids_of(pid) == want
        status, _, _ = server.get("/hello")
        assert status == 200


def _run_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    server = Server(*args, env=env)
    return subprocess.run(server.cmd, cwd=server.cwd, env=server.env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("flag", "value", "key"), [
    ("--user", "no-such-user-prefork", "user"),
    ("--group", "no-such-group-prefork", "group"),
])
def test_unknown_user_or_group_is_one_line(flag: str, value: str, key: str) -> None:
    proc = _run_fails(flag, value)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert flag in lines[0] and value in lines[0] and f"no {key} named" in lines[0]
    assert "Fix:" in lines[0]
    assert "Listening at" not in proc.stdout + proc.stderr


def test_worker_tmp_dir_holds_the_heartbeat(shared_dir: Path) -> None:
    with Server("--worker-tmp-dir", str(shared_dir), "--workers", "2") as server:
        server.start(wait_workers=2)
        for pid in server.ready_workers():
            targets = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    continue
            heartbeats = [t for t in targets if t.startswith(f"{shared_dir}/django-prefork-")
                          and t.endswith(" (deleted)")]
            assert len(heartbeats) == 1, targets
        assert os.listdir(shared_dir) == []  # unlinked at once
        status, _, _ = server.get("/hello")
        assert status == 200


def test_missing_worker_tmp_dir_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = _run_fails("--worker-tmp-dir", str(missing))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "--worker-tmp-dir" in lines[0] and str(missing) in lines[0] and "Fix:" in lines[0]


@needs_root
def test_reload_refuses_a_new_user(traversable: None, shared_dir: Path) -> None:
    """The new settings are read by a zygote already running as the old user: a HUP that
    changes USER/GROUP is refused with one line and the workers serve on."""
    assert NOBODY is not None
    conf = shared_dir / "prefork.conf.py"
    # The group too: left unset it stays the master's (root's, as in gunicorn), and group
    # root may not traverse /root even with the fixture's o+x.
    group = f"group = {_nobody_group()!r}\n"
    conf.write_text("user = 'nobody'\n" + group)
    os.chmod(conf, 0o644)
    with Server("-c", str(conf)) as server:
        server.start(wait_workers=1)
        workers = server.ready_workers()
        assert ids_of(workers[0])[0] == NOBODY.pw_uid
        conf.write_text("user = 'root'\n" + group)
        start = len(server.lines)
        server.signal(signal.SIGHUP)
        line = server.wait_for_line("Reload aborted", timeout=60, start=start)
        assert "USER, GROUP or INITGROUPS changed" in line.string
        assert "restart" in line.string
        status, _, _ = server.get("/hello")
        assert status == 200
        assert server.ready_workers() == workers


@needs_root
def test_initgroups_gives_the_users_groups(traversable: None) -> None:
    assert NOBODY is not None
    group = _nobody_group()
    gid = _expected_gid(group)
    with Server("--user", "nobody", "--group", group, "--initgroups") as server:
        server.start(wait_workers=1)
        (worker,) = server.ready_workers()
        assert ids_of(worker) == (NOBODY.pw_uid, gid)
        assert groups_of(worker) == set(os.getgrouplist("nobody", gid))
        status, _, _ = server.get("/hello")
        assert status == 200
