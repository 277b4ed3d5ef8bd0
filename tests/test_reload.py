"""HUP as a rolling reload, through `runprefork` with real signals, sockets and clients.

Each test serves a settings module (and, where the code changes, a copy of the test project)
written into tmp_path, so it can change them between HUPs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from server import (
    LISTEN_RE,
    TESTS_DIR,
    ClientLoop,
    Server,
    children_of,
    free_port,
    is_zygote,
    pid_alive,
    unix_get,
    wait_until,
)

pytestmark = pytest.mark.integration

RELOAD_DONE = r"Reload complete: generation (\d+) serves"


class Project:
    """A settings module (and optionally a copy of the test project) the test may rewrite."""

    def __init__(self, root: Path, copy_project: bool = False) -> None:
        self.root = root
        self.settings = root / "reloadsettings.py"
        if copy_project:
            shutil.copytree(TESTS_DIR / "testproject", root / "testproject")
        self.views = root / "testproject" / "views.py"

    def write_settings(self, prefork: str, extra: str = "") -> None:
        self.settings.write_text(
            f"from testproject.settings import *  # noqa: F403\n{extra}\nPREFORK = {prefork}\n")

    def server(self, *args: str, bind: str | None = "127.0.0.1:0") -> Server:
        server = Server(*args, settings="reloadsettings", bind=bind)
        server.env["PYTHONPATH"] = os.pathsep.join([str(self.root), server.env["PYTHONPATH"]])
        # Files rewritten within a second keep their size: a cached .pyc would be reused.
        server.env["PYTHONDONTWRITEBYTECODE"] = "1"
        return server


def hup_and_wait(server: Server, pattern: str = RELOAD_DONE, timeout: float = 60.0) -> str:
    """Send HUP; wait for a line (after this point) matching pattern; return the line."""
    mark = len(server.lines)
    server.signal(signal.SIGHUP)
    return server.wait_for_line(pattern, timeout=timeout, start=mark).string


def test_master_keeps_working_while_a_new_generation_boots_slowly(tmp_path: Path):
    """The new generation's settings block at import: meanwhile the master still answers
    TTIN and replaces a killed worker, because nothing in its loop waits on the boot."""
    project = Project(tmp_path)
    project.write_settings("{'WORKERS': 2}")
    started, gate = tmp_path / "import-started", tmp_path / "gate"
    with project.server() as server:
        server.start(wait_workers=2)
        project.write_settings("{'WORKERS': 2}", extra=(
            "import pathlib, time\n"
            f"pathlib.Path({str(started)!r}).touch()\n"
            "_deadline = time.monotonic() + 30\n"
            f"while not pathlib.Path({str(gate)!r}).exists() and time.monotonic() < _deadline:\n"
            "    time.sleep(0.05)\n"))
        server.signal(signal.SIGHUP)
        wait_until(started.exists, timeout=30, message="the new generation to import settings")
        server.signal(signal.SIGTTIN)
        wait_until(lambda: len(server.ready_workers()) == 3, timeout=20,
                   message="a third worker after TTIN while the new generation boots")
        victim = server.ready_workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.worker_pids()
                   and len(server.ready_workers()) == 3, timeout=20,
                   message="the killed worker replaced while the new generation boots")
        assert server.get("/hello")[0] == 200
        assert not gate.exists() and "generation 1 is ready" not in server.output
        old = set(server.ready_workers())
        gate.touch()
        server.wait_for_line(RELOAD_DONE, timeout=60)
        wait_until(lambda: len(server.ready_workers()) == 2
                   and not set(server.ready_workers()) & old, timeout=20,
                   message="two workers of the new generation (HUP resets the count)")


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_five_hups_without_a_failed_request(tmp_path: Path, worker_class: str):
    if worker_class == "gevent":
        pytest.importorskip("gevent")
    project = Project(tmp_path)
    project.write_settings(f"{{'WORKERS': 3, 'WORKER_CLASS': {worker_class!r}}}")
    with project.server() as server:
        server.start(wait_workers=3)
        with ClientLoop(server) as loop:
            for expected in range(1, 6):
                before = set(server.ready_workers())
                line = hup_and_wait(server)
                assert line.endswith(f"generation {expected} serves")
                wait_until(lambda b=before: len(server.ready_workers()) == 3
                           and not set(server.ready_workers()) & b, timeout=20,
                           message="three new workers")
                loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]
        # Batches of one (the default): never more than one new worker booting at a time,
        # so never more than workers + 1 serving.
        assert "replacing the workers 1 at a time" in server.output


#: Run by every interpreter on the server's PYTHONPATH: a zygote, after each fork it makes
#: (not its children's), sleeps before going on, as a busy machine may deschedule it, so
#: that the child has exited before the zygote looks at it.
DESCHEDULED_AFTER_FORK = """\
import os
if "DJANGO_PREFORK_ZYGOTE" in os.environ:
    import time
    _zygote = os.getpid()
    os.register_at_fork(
        after_in_parent=lambda: os.getpid() == _zygote and time.sleep(0.2))
"""


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_a_zygote_descheduled_after_each_fork_still_starts_every_worker(
        tmp_path: Path, worker_class: str):
    """gevent's patched os.waitpid never saw a child that had exited before its watcher
    started: the gevent zygote then waited forever and started no more workers (a CI run
    stalled in the middle of a reload this way). Both start-up (gevent's workers come from
    a zygote) and a HUP (every class's do) go through the zygote's fork."""
    if worker_class == "gevent":
        pytest.importorskip("gevent")
    project = Project(tmp_path)
    (tmp_path / "sitecustomize.py").write_text(DESCHEDULED_AFTER_FORK)
    project.write_settings(f"{{'WORKERS': 2, 'WORKER_CLASS': {worker_class!r}}}")
    with project.server() as server:
        server.start(wait_workers=2)
        before = set(server.ready_workers())
        line = hup_and_wait(server)
        assert line.endswith("generation 1 serves")
        wait_until(lambda: len(server.ready_workers()) == 2
                   and not set(server.ready_workers()) & before, timeout=20,
                   message="two new workers")
        assert server.get("/hello")[0] == 200


#: The first zygote to fork hangs right after its first fork (the worker still starts); the
#: zygote started after it does not.
HANGS_AFTER_ITS_FIRST_FORK = """\
import os
if "DJANGO_PREFORK_ZYGOTE" in os.environ:
    import pathlib, time
    _zygote, _marker = os.getpid(), pathlib.Path({marker!r})
    def _hang():
        if os.getpid() == _zygote and not _marker.exists():
            _marker.touch()
            time.sleep(600)
    os.register_at_fork(after_in_parent=_hang)
"""


def test_a_zygote_that_stops_forking_is_killed_and_started_again(tmp_path: Path):
    """A zygote that never reports a fork it was asked for (hung, whatever the cause) is
    killed after starter.FORK_REPORT_TIMEOUT, with a line saying so, and started again: the
    worker count is made up instead of waiting for it forever, and no request fails."""
    project = Project(tmp_path)
    marker = tmp_path / "hung-once"
    (tmp_path / "sitecustomize.py").write_text(HANGS_AFTER_ITS_FIRST_FORK.format(
        marker=str(marker)))
    project.write_settings("{'WORKERS': 2}")
    with project.server() as server:
        server.start(wait_workers=1)  # generation 0's zygote: the lean master has no Django
        with ClientLoop(server) as loop:
            line = server.wait_for_line(r"Generation 0 cannot start workers: .*", timeout=60)
            assert "did not report a worker it was asked to fork" in line.string
            assert marker.exists()
            server.wait_for_line(r"Starting generation 0's zygote again", timeout=20)
            wait_until(lambda: len(server.ready_workers()) == 2, timeout=20,
                       message="the second worker, from the new zygote")
            loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]
        line = hup_and_wait(server)
        assert line.endswith("generation 1 serves")


def test_reload_batch_replaces_workers_several_at_a_time(tmp_path: Path):
    project = Project(tmp_path)
    project.write_settings("{'WORKERS': 4, 'RELOAD_BATCH': 2}")
    with project.server() as server:
        server.start(wait_workers=4)
        before = set(server.ready_workers())
        with ClientLoop(server) as loop:
            line = hup_and_wait(server, r"replacing the workers (\d+) at a time")
            assert "replacing the workers 2 at a time" in line
            server.wait_for_line(RELOAD_DONE, timeout=60)
            wait_until(lambda: len(server.ready_workers()) == 4
                       and not set(server.ready_workers()) & before, timeout=20,
                       message="four new workers")
            loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]


def test_bad_reload_keeps_the_old_workers_then_a_fixed_one_works(tmp_path: Path):
    """A bad setting, then a SyntaxError in a view, then a project whose WSGI module fails in
    the worker: each time the old workers serve on and one line says why; then a fixed HUP
    reloads."""
    project = Project(tmp_path, copy_project=True)
    project.write_settings("{'WORKERS': 2}")
    good_views = project.views.read_text()
    with project.server() as server:
        server.start(wait_workers=2)
        workers = set(server.ready_workers())
        with ClientLoop(server) as loop:
            project.write_settings("{'WORKERS': 0}")
            line = hup_and_wait(server, r"Reload aborted")
            assert "the previous workers keep serving" in line and "WORKERS" in line
            loop.wait_for_more()

            project.write_settings("{'WORKERS': 2}")
            project.views.write_text(good_views + "\ndef broken(:\n")
            line = hup_and_wait(server, r"Reload aborted")
            assert "SyntaxError" in line and "views.py" in line, line
            loop.wait_for_more()
            assert "Traceback" not in server.output  # one line each time, said by the master

            project.views.write_text(good_views)
            project.write_settings(
                "{'WORKERS': 2}", extra="WSGI_APPLICATION = 'testproject.broken_wsgi.application'")
            line = hup_and_wait(server, r"Reload aborted")
            assert "failed to boot" in line, line
            loop.wait_for_more()
            assert set(server.ready_workers()) == workers
            assert all(pid_alive(pid) for pid in workers)

            project.write_settings("{'WORKERS': 2}")
            hup_and_wait(server)
            wait_until(lambda: len(server.ready_workers()) == 2
                       and not set(server.ready_workers()) & workers, timeout=20,
                       message="two new workers after the fixed HUP")
            loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]


def test_hup_with_a_changed_bind_list(tmp_path: Path):
    """The kept address keeps its socket (no "address already in use", no refused client),
    the added one opens, the removed one closes once its workers are gone."""
    port = free_port()
    old_sock, new_sock = str(tmp_path / "old.sock"), str(tmp_path / "new.sock")
    project = Project(tmp_path)
    project.write_settings(f"{{'WORKERS': 2, 'BIND': ['127.0.0.1:{port}', 'unix:{old_sock}']}}")
    with project.server(bind=None) as server:
        server.start(wait_workers=2)
        assert server.port == port
        assert unix_get(old_sock)[0] == 200
        with ClientLoop(server) as loop:
            project.write_settings(
                f"{{'WORKERS': 2, 'BIND': ['127.0.0.1:{port}', 'unix:{new_sock}']}}")
            mark = len(server.lines)
            hup_and_wait(server)
            server.wait_for_line(rf"Listening at: unix:{new_sock}", start=mark)
            server.wait_for_line(rf"Stopped listening at: unix:{old_sock}", start=mark)
            loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]
        assert "already in use" not in server.output
        assert unix_get(new_sock)[0] == 200
        assert not os.path.exists(old_sock)


def test_a_hup_during_start_up_is_kept_for_later():
    """Sent as soon as the banner is out (the master is re-executing itself without Django, or
    has no worker yet), a HUP neither ends the master nor is lost: it reloads once a worker
    of the first generation serves."""
    with Server("--workers", "1") as server:
        server.start(wait_workers=None)
        server.wait_for_line(LISTEN_RE, timeout=30)
        server.signal(signal.SIGHUP)
        server.wait_for_line(RELOAD_DONE, timeout=60)
        assert server.proc is not None and server.proc.poll() is None
        assert "Reload deferred" in server.output or "Handling signal: hup" in server.output


def test_a_log_file_that_cannot_be_opened_aborts_the_reload(tmp_path: Path):
    project = Project(tmp_path)
    project.write_settings("{'WORKERS': 2}")
    with project.server() as server:
        server.start(wait_workers=2)
        workers = set(server.ready_workers())
        project.write_settings("{'WORKERS': 2, 'ACCESSLOG': '/nonexistent/d/x.log'}")
        line = hup_and_wait(server, r"Reload aborted")
        assert "/nonexistent/d/x.log" in line
        assert server.get("/hello")[0] == 200
        assert set(server.ready_workers()) == workers
        project.write_settings("{'WORKERS': 2}")
        hup_and_wait(server)
        assert server.get("/hello")[0] == 200


def test_hup_with_preload_rereads_the_settings(tmp_path: Path):
    """--preload keeps the app (and its code) in the master, as gunicorn does; a HUP still
    reads the settings again, in a one-shot interpreter, and forks the new workers."""
    project = Project(tmp_path)
    project.write_settings("{'WORKERS': 1}")
    with project.server("--preload") as server:
        server.start(wait_workers=1)
        (first,) = server.ready_workers()
        project.write_settings("{'WORKERS': 2}")
        hup_and_wait(server)
        wait_until(lambda: len(server.ready_workers()) == 2
                   and first not in server.ready_workers(), timeout=20,
                   message="two forked workers after HUP with WORKERS = 2")
        assert server.get("/hello")[0] == 200


def test_a_killed_zygote_is_started_again():
    with Server("--workers", "2") as server:
        server.start(wait_workers=2)
        (zygote,) = [pid for pid in children_of(server.pid) if is_zygote(pid)]
        os.kill(zygote, signal.SIGKILL)
        server.wait_for_line(rf"zygote \(pid:{zygote}\) exited", timeout=20)
        wait_until(lambda: [pid for pid in children_of(server.pid)
                            if is_zygote(pid) and pid != zygote], timeout=30,
                   message="a new zygote")
        victim = server.ready_workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.worker_pids()
                   and len(server.ready_workers()) == 2, timeout=30,
                   message="the killed worker replaced by the new zygote")
        assert server.get("/hello")[0] == 200


def test_the_second_new_worker_waits_for_the_old_zygote_to_exit():
    """Once the first new worker serves, the old zygote is told to go, and no more new
    workers start until it has exited: a reload's peak memory is the old tree plus the new
    zygote and one new worker. Here the old zygote is stopped (SIGSTOP), so it cannot exit
    until it is continued."""
    with Server("--workers", "2") as server:
        server.start(wait_workers=2)
        old_workers = set(server.ready_workers())
        (zygote,) = [pid for pid in children_of(server.pid) if is_zygote(pid)]
        os.kill(zygote, signal.SIGSTOP)
        try:
            server.signal(signal.SIGHUP)

            def new_workers() -> set[int]:
                return set(server.ready_workers()) - old_workers

            wait_until(new_workers, timeout=30, message="the first new worker")
            # Held for OLD_ZYGOTE_GRACE (5 s) from the moment the first one served.
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                assert len(set(server.worker_pids()) - old_workers) == 1, \
                    "a second new worker started while the old zygote lived"
                assert pid_alive(zygote)
                time.sleep(0.02)
        finally:
            os.kill(zygote, signal.SIGCONT)
        wait_until(lambda: not pid_alive(zygote), timeout=10, message="the old zygote's exit")
        wait_until(lambda: len(new_workers()) == 2, timeout=30, message="the second new worker")
        server.wait_for_line(RELOAD_DONE, timeout=30)


def test_warmup_path_failing_keeps_the_old_workers(tmp_path: Path):
    """With RELOAD_WARMUP_PATH, a new worker must answer that path without a 5xx before it
    counts as ready: a view that imports but fails when run rolls the reload back."""
    project = Project(tmp_path)
    project.write_settings("{'WORKERS': 2, 'RELOAD_WARMUP_PATH': '/hello'}")
    with project.server() as server:
        server.start(wait_workers=2)
        workers = set(server.ready_workers())
        with ClientLoop(server) as loop:
            project.write_settings("{'WORKERS': 2, 'RELOAD_WARMUP_PATH': '/error'}")
            line = hup_and_wait(server, r"Reload aborted")
            assert "failed to boot" in line, line
            assert "GET /error answered 500" in server.output
            loop.wait_for_more()
            assert set(server.ready_workers()) == workers
            project.write_settings("{'WORKERS': 2, 'RELOAD_WARMUP_PATH': '/hello?from=test'}")
            hup_and_wait(server)
            wait_until(lambda: len(server.ready_workers()) == 2
                       and not set(server.ready_workers()) & workers, timeout=20,
                       message="two new workers that answered the warm-up")
            loop.wait_for_more()
        assert loop.failures == [], loop.failures[:5]


def test_hup_applies_changed_raw_env_and_chdir(tmp_path: Path):
    """gunicorn sets its `env` again on reload: so does the new generation, and its chdir."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    settings = tmp_path / "envsettings.py"

    def write(value: str, directory: Path) -> None:
        settings.write_text(
            "from fixtures.conf_settings import *  # noqa: F403\n"
            f"PREFORK = {{'RAW_ENV': ['CONF_TEST_R={value}'], 'CHDIR': {str(directory)!r}}}\n")

    def process() -> dict[str, object]:
        status, _, body = server.get("/process")
        assert status == 200
        return json.loads(body)

    write("1", first)
    server = Server(settings="envsettings")
    server.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), server.env["PYTHONPATH"]])
    server.env["PYTHONDONTWRITEBYTECODE"] = "1"
    with server:
        server.start(wait_workers=1)
        assert process()["env"] == {"CONF_TEST_R": "1"}
        assert process()["cwd"] == str(first)
        write("2", second)
        hup_and_wait(server)
        wait_until(lambda: process()["env"] == {"CONF_TEST_R": "2"}, timeout=30,
                   message="the new generation's raw_env")
        assert process()["cwd"] == str(second)
