"""The master process: real signals, real dead and hung workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from server import ClientLoop, Server, children_of, is_zygote, pid_alive, running, wait_until

pytestmark = pytest.mark.integration


def test_killed_worker_is_replaced():
    with running("--workers", "2", wait_workers=2) as server:
        victim = server.ready_workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.worker_pids() and
                   len(server.ready_workers()) == 2, message="a replacement worker")
        assert server.get("/hello")[0] == 200
        assert f"Worker (pid:{victim}) was sent SIGKILL" in server.output


def test_hung_worker_is_killed_after_timeout():
    with running("--workers", "1", "--timeout", "2") as server:
        (worker,) = server.ready_workers()
        started = time.monotonic()
        # A request that hangs longer than the timeout: the master must abort the worker.
        try:
            server.get("/sleep?s=30", timeout=20)
        except Exception:
            pass
        elapsed = time.monotonic() - started
        assert elapsed < 15
        server.wait_for_line(rf"WORKER TIMEOUT \(pid:{worker}\)")
        # The worker logged which request it was serving before it died.
        server.wait_for_line(r"while serving GET /sleep\?s=30")
        wait_until(lambda: server.ready_workers() and worker not in server.ready_workers(),
                   message="a replacement for the hung worker")
        assert server.get("/hello")[0] == 200


def test_term_lets_the_in_flight_request_finish(tmp_path: Path):
    mark = tmp_path / "in-flight"
    with running("--workers", "1", "--graceful-timeout", "20") as server:
        result = {}

        def slow_request():
            result["response"] = server.get(f"/sleep?s=1.5&mark={mark}", timeout=20)

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_until(mark.exists, timeout=10, message="the slow request to reach the worker")
        server.signal(signal.SIGTERM)
        thread.join(timeout=20)
        assert result["response"][0] == 200
        assert result["response"][2].startswith(b"slept 1.5")
        assert server.wait_exit(timeout=20) == 0


def test_quit_stops_quickly():
    with running("--workers", "2", wait_workers=2) as server:
        workers = server.worker_pids()
        server.signal(signal.SIGINT)
        assert server.wait_exit(timeout=10) == 0
        wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5,
                   message="the workers to exit")


def test_hup_replaces_workers_without_failed_requests():
    with running("--workers", "2", wait_workers=2) as server:
        before = set(server.ready_workers())
        with ClientLoop(server) as loop:
            server.signal(signal.SIGHUP)
            wait_until(lambda: len(server.ready_workers()) == 2
                       and not set(server.ready_workers()) & before, timeout=30,
                       message="a new set of workers after HUP")
            ok_after = loop.ok
            wait_until(lambda: loop.ok > ok_after + 5, message="requests served after HUP")
        assert loop.failures == []
        assert server.get("/hello")[0] == 200


def test_hup_rereads_settings(tmp_path: Path):
    settings_dir = tmp_path / "settingsmod"
    settings_dir.mkdir()
    (settings_dir / "__init__.py").write_text("")
    module = settings_dir / "hupsettings.py"
    module.write_text("from testproject.settings import *\nPREFORK = {'WORKERS': 1}\n")
    server = Server(settings="hupsettings")
    server.env["PYTHONPATH"] = os.pathsep.join([str(settings_dir), server.env["PYTHONPATH"]])
    with server:
        server.start(wait_workers=1)
        (first,) = server.ready_workers()
        module.write_text("from testproject.settings import *\nPREFORK = {'WORKERS': 3}\n")
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.worker_pids()) == 3 and first not in server.worker_pids()
                   and len(server.ready_workers()) == 3, timeout=30,
                   message="three new workers after HUP with WORKERS = 3")
        # A broken settings file on the next HUP keeps the server as it is.
        module.write_text("from testproject.settings import *\nPREFORK = {'WORKERS': 0}\n")
        mark = len(server.lines)
        server.signal(signal.SIGHUP)
        server.wait_for_line(r"Reload aborted.*WORKERS", timeout=60, start=mark)
        assert len(server.ready_workers()) == 3
        assert server.get("/hello")[0] == 200


def test_ttin_and_ttou_change_the_worker_count():
    with running("--workers", "2", wait_workers=2) as server:
        server.signal(signal.SIGTTIN)
        wait_until(lambda: len(server.ready_workers()) == 3, message="3 workers after TTIN")
        # One at a time: the kernel merges a signal sent again before the first is handled.
        server.signal(signal.SIGTTOU)
        wait_until(lambda: len(server.worker_pids()) == 2, message="2 workers after TTOU")
        server.signal(signal.SIGTTOU)
        wait_until(lambda: len(server.worker_pids()) == 1, message="1 worker after 2 x TTOU")
        assert server.get("/hello")[0] == 200


def test_max_requests_recycles_workers():
    with running("--workers", "1", "--max-requests", "3") as server:
        (first,) = server.ready_workers()
        pids = []
        for _ in range(7):
            status, _, body = server.get("/pid")
            assert status == 200
            pids.append(int(body))
        assert pids[:3] == [first] * 3
        assert len(set(pids)) >= 3  # recycled after the 3rd and the 6th request
        assert "Autorestarting worker after current request" in server.output


def test_pidfile_written_and_removed(tmp_path: Path):
    pidfile = tmp_path / "server.pid"
    server = Server("--pid", str(pidfile))
    with server:
        server.start()
        assert pidfile.read_text().strip() == str(server.pid)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert not pidfile.exists()


def test_workers_exit_when_the_master_dies():
    with running("--workers", "2", wait_workers=2) as server:
        workers = server.ready_workers()
        os.kill(server.pid, signal.SIGKILL)
        server.wait_exit(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=10,
                   message="orphaned workers to exit")


def test_preload_loads_the_app_in_the_master():
    with running("--workers", "2", "--preload", wait_workers=2) as server:
        assert "app preloaded" in server.output
        assert server.get("/hello")[0] == 200
        victim = server.ready_workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(server.ready_workers()) == 2 and
                   victim not in server.ready_workers(), message="a forked replacement")
        assert server.get("/hello")[0] == 200


def test_broken_project_is_reported_once_and_exits_nonzero():
    server = Server("--workers", "4", settings="testproject.settings_broken_app")
    with server:
        server.start(wait_workers=None)
        assert server.wait_exit(timeout=30) == 3
        output = server.output
    # One worker tried, one traceback printed, then the master stopped.
    assert output.count("Worker failed to boot:") == 1, output
    assert output.count("ImportError: simulated import error") == 1, output


def test_usr1_is_accepted_and_server_keeps_serving():
    with running("--workers", "1") as server:
        server.signal(signal.SIGUSR1)
        server.wait_for_line("Handling signal: usr1")
        assert server.get("/hello")[0] == 200


def test_hup_loads_new_code(tmp_path: Path):
    (tmp_path / "hupcode_settings.py").write_text(
        "from testproject.settings import *\nWSGI_APPLICATION = 'hupcode_app.application'\n")
    app = tmp_path / "hupcode_app.py"

    def write_app(version: str) -> None:
        app.write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [b'{version}']\n")

    write_app("version 1")
    server = Server(settings="hupcode_settings")
    server.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), server.env["PYTHONPATH"]])
    server.env["PYTHONDONTWRITEBYTECODE"] = "1"
    with server:
        server.start()
        assert server.get("/")[2] == b"version 1"
        write_app("version 2")
        server.signal(signal.SIGHUP)
        wait_until(lambda: server.get("/")[2] == b"version 2", timeout=30, interval=0.2,
                   message="the new code to be served after HUP")


def test_gevent_workers_fork_from_a_zygote_that_exits_with_the_master():
    with running("--workers", "2", "--worker-class", "gevent", wait_workers=2) as server:
        zygotes = [pid for pid in children_of(server.pid) if is_zygote(pid)]
        assert len(zygotes) == 1, server.output
        victim = server.ready_workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(server.ready_workers()) == 2 and
                   victim not in server.ready_workers(), message="a worker forked anew")
        assert server.get("/hello")[0] == 200
        workers = server.ready_workers()
        os.kill(server.pid, signal.SIGKILL)
        server.wait_exit(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in [*zygotes, *workers]), timeout=10,
                   message="the zygote and the workers to exit after the master died")


def test_workers_as_fresh_interpreters_without_a_zygote():
    # The path of platforms without a child subreaper: gevent workers exec'd one by one.
    server = Server("--workers", "2", "--worker-class", "gevent",
                    env={"DJANGO_PREFORK_NO_ZYGOTE": "1"})
    with server:
        server.start(wait_workers=2)
        assert not any(is_zygote(pid) for pid in children_of(server.pid))
        assert server.get("/hello")[0] == 200
        before = set(server.ready_workers())
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.ready_workers()) == 2
                   and not set(server.ready_workers()) & before, timeout=30,
                   message="new exec'd workers after HUP")
        assert server.get("/hello")[0] == 200


def test_a_worker_that_keeps_failing_to_boot_is_started_ever_later(tmp_path: Path):
    """Once its generation serves, a worker that fails to boot neither stops the server nor
    comes back at once: the other worker serves on, each next start waits twice as long as
    the one before (one start per wait, not one per loop tick), and a worker that boots
    again ends the waits."""
    refuse = tmp_path / "refuse"
    conf = tmp_path / "refusing.conf.py"
    conf.write_text(
        "import os\n\n\n"
        "def post_fork(server, worker):\n"
        f"    if os.path.exists({str(refuse)!r}):\n"
        "        raise RuntimeError('post_fork refuses')\n")
    with Server("-c", str(conf), "--workers", "2") as server:
        server.start(wait_workers=2)
        refuse.touch()
        mark = len(server.lines)
        os.kill(server.ready_workers()[0], signal.SIGKILL)
        server.wait_for_line(r"failed to boot .*the next start in 4 s", timeout=30, start=mark)
        lines = server.lines[mark:]
        held = [line for line in lines if "the next start in" in line]
        assert [line.rsplit(" in ", 1)[1] for line in held] == ["1 s", "2 s", "4 s"], held
        last = max(i for i, line in enumerate(lines) if "the next start in 4 s" in line)
        assert sum("Booting worker" in line for line in lines[:last]) == 3, lines[:last]
        assert server.get("/hello")[0] == 200
        assert len(server.ready_workers()) == 1

        refuse.unlink()
        wait_until(lambda: len(server.ready_workers()) == 2, timeout=30,
                   message="a worker booting again once post_fork no longer refuses")
        # Booted again, so the next failure waits 1 s again, not 8.
        refuse.touch()
        mark = len(server.lines)
        os.kill(server.ready_workers()[0], signal.SIGKILL)
        line = server.wait_for_line(r"the next start in \d+ s", timeout=30, start=mark)
        assert line.group(0).endswith("in 1 s"), line.group(0)
