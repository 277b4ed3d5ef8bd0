"""gunicorn's server hooks: called in the process and at the moment gunicorn calls them.

The hooks (tests/fixtures/hooks_record.py) append "hookname pid ..." lines to $HOOKS_LOG;
each test starts a real server, from a -c file or PREFORK dotted paths, and reads them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from django_prefork.conf import ConfigError, load_config
from server import TESTS_DIR, Server, wait_until

HOOKS_CONF = str(TESTS_DIR / "fixtures" / "hooks.conf.py")


def read_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


def names(path: Path) -> list[str]:
    return [fields[0] for fields in read_log(path)]


def calls(path: Path, name: str) -> list[list[str]]:
    return [fields for fields in read_log(path) if fields[0] == name]


def wait_for_hook(path: Path, name: str, count: int = 1) -> list[list[str]]:
    return wait_until(lambda: len(calls(path, name)) >= count and calls(path, name),
                      timeout=30, message=f"{count} call(s) of {name}: {read_log(path)}")


def hook_server(tmp_path: Path, *args: str, source: str) -> tuple[Server, Path]:
    log = tmp_path / "hooks.log"
    if source == "file":
        server = Server("-c", HOOKS_CONF, *args, settings="fixtures.conf_settings",
                        env={"HOOKS_LOG": str(log)})
    else:
        server = Server("--workers", "2", *args, settings="fixtures.hooks_settings",
                        env={"HOOKS_LOG": str(log)})
    return server, log


@pytest.fixture(params=["file", "prefork"])
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_start_request_ttin_hup_and_term(tmp_path, source):
    server, log = hook_server(tmp_path, source=source)
    with server.start(wait_workers=2):
        master = str(server.pid)
        wait_for_hook(log, "post_worker_init", 2)
        workers = {str(pid) for pid in server.ready_workers()}
        order = names(log)
        # gunicorn's order: nworkers_changed (setup), on_starting, when_ready, then per
        # worker pre_fork (master), post_fork and post_worker_init (the worker).
        assert order[:3] == ["nworkers_changed", "on_starting", "when_ready"], order
        assert calls(log, "nworkers_changed")[0][1:] == [master, "2", "None"]
        for name in ("on_starting", "when_ready", "pre_fork"):
            assert {c[1] for c in calls(log, name)} == {master}, (name, read_log(log))
        assert calls(log, "on_starting")[0][2:] == [master, "2"]  # server.pid, server.cfg
        assert all(c[3] == "None" for c in calls(log, "pre_fork"))  # not forked yet
        post_fork = calls(log, "post_fork")
        assert {c[1] for c in post_fork} == workers
        for fields in post_fork:  # pid, server.pid, worker.pid, worker.ppid
            assert fields[2] == master and fields[3] == fields[1] and fields[4] == master
        assert {c[1] for c in calls(log, "post_worker_init")} == workers
        assert all(c[3:] == ["True", "True"] for c in calls(log, "post_worker_init"))
        for pid in workers:
            mine = [f[0] for f in read_log(log) if f[1] == pid]
            assert mine[:2] == ["post_fork", "post_worker_init"], mine
        assert order.index("pre_fork") < order.index("post_fork")

        # A request: pre_request and post_request in the worker that served it.
        status, _, _ = server.get("/hello?x=1")
        assert status == 200
        pre = wait_for_hook(log, "pre_request")[0]
        post = wait_for_hook(log, "post_request")[0]
        assert pre[1] in workers and pre[2:] == ["GET", "/hello", "x=1"]
        assert post[1] == pre[1] and post[2:] == ["GET", "/hello", "/hello", "200"]

        # TTIN: nworkers_changed(3, 2) in the master, and a third worker's hooks.
        server.signal(signal.SIGTTIN)
        changed = wait_for_hook(log, "nworkers_changed", 2)[1]
        assert changed[1:] == [master, "3", "2"]
        wait_for_hook(log, "post_worker_init", 3)

        # HUP: on_reload in the master; the old workers exit (worker_exit in each, then
        # child_exit in the master) while new ones boot.
        server.signal(signal.SIGHUP)
        assert wait_for_hook(log, "on_reload")[0][1:] == [master, master]
        server.wait_for_line("Reload complete", timeout=60)
        exits = wait_for_hook(log, "child_exit", 3)
        assert {c[1] for c in exits} == {master}
        retired = {c[2] for c in exits}
        assert retired >= workers
        worker_exits = calls(log, "worker_exit")
        assert {c[1] for c in worker_exits} >= workers  # in the worker itself
        log_lines = read_log(log)
        for pid in workers:  # the worker's own exit before the master reaps it
            we = next(i for i, f in enumerate(log_lines) if f[:2] == ["worker_exit", pid])
            ce = next(i for i, f in enumerate(log_lines) if f[0] == "child_exit" and f[2] == pid)
            assert we < ce

        # TERM: worker_exit in every worker, then on_exit last, in the master.
        serving = {str(pid) for pid in server.ready_workers()}
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    final = read_log(log)
    assert final[-1][:3] == ["on_exit", master, master], final[-6:]
    assert {f[1] for f in final if f[0] == "worker_exit"} >= serving


def test_worker_abort_on_timeout(tmp_path):
    server, log = hook_server(tmp_path, "--workers", "1", "--timeout", "2", source="prefork")
    with server.start(wait_workers=1):
        (worker,) = server.ready_workers()
        try:
            server.get("/sleep?s=30", timeout=20)
        except Exception:
            pass  # the hung worker's client gets a 500 or a closed connection
        aborted = wait_for_hook(log, "worker_abort")[0]
        assert aborted[1:] == [str(worker), str(worker)]
        wait_for_hook(log, "child_exit")
        # worker_exit follows worker_abort in the worker, as gunicorn's sys.exit(1) runs it
        order = [f[:2] for f in read_log(log) if f[0] in ("worker_abort", "worker_exit")]
        assert order == [["worker_abort", str(worker)], ["worker_exit", str(worker)]]
        assert calls(log, "child_exit")[0][1:] == [str(server.pid), str(worker)]


RAISING_CONF = """
from fixtures.hooks_record import raises as _raises, record as _record

workers = 1

def on_starting(server):
    _raises()

def when_ready(server):
    _raises()

def pre_fork(server, worker):
    _raises()

def nworkers_changed(server, new, old):
    _raises()

def on_reload(server):
    _raises()

def post_request(worker, req, environ, resp):
    _raises()

def child_exit(server, worker):
    _raises()

def worker_exit(server, worker):
    _raises()

def pre_request(worker, req):
    _record("pre_request", req.path)
    if req.path == "/hook-raises":
        raise RuntimeError("pre_request refuses")
"""


def test_a_hook_that_raises_is_logged_and_the_master_serves_on(tmp_path):
    conf = tmp_path / "raising.conf.py"
    conf.write_text(RAISING_CONF)
    log = tmp_path / "hooks.log"
    server = Server("-c", str(conf), settings="fixtures.conf_settings",
                    env={"HOOKS_LOG": str(log)})
    with server.start(wait_workers=1):
        server.wait_for_line("Hook on_starting raised RuntimeError: a hook that fails")
        assert server.get("/hello")[0] == 200
        server.wait_for_line("Hook post_request raised RuntimeError")
        # pre_request raising is answered like an app's exception: a 500, as in gunicorn.
        assert server.get("/hook-raises")[0] == 500
        assert len(server.ready_workers()) == 1
        server.signal(signal.SIGTTIN)  # nworkers_changed and pre_fork raise
        wait_until(lambda: len(server.ready_workers()) == 2, timeout=30,
                   message="a second worker despite raising hooks")
        server.signal(signal.SIGHUP)  # on_reload raises
        server.wait_for_line("Reload complete", timeout=60)
        server.wait_for_line("Hook child_exit raised RuntimeError")
        assert server.get("/hello")[0] == 200
        assert server.proc.poll() is None
        assert calls(log, "raises")


def test_a_failing_post_fork_fails_the_boot_as_in_gunicorn(tmp_path):
    conf = tmp_path / "boot.conf.py"
    exits = tmp_path / "exits.log"
    conf.write_text(
        "def post_fork(server, worker):\n    raise RuntimeError('no pool')\n\n"
        "def worker_exit(server, worker):\n"
        f"    open({str(exits)!r}, 'a').write(f'worker_exit {{worker.pid}}\\n')\n")
    server = Server("-c", str(conf), settings="fixtures.conf_settings")
    server.start(wait_workers=None)
    try:
        assert server.wait_exit(timeout=60) == 3  # WORKER_BOOT_ERROR
        assert "Hook post_fork raised RuntimeError: no pool" in server.output
        # gunicorn runs worker_exit in its finally clause, after a failed boot too
        assert exits.read_text().startswith("worker_exit ")
    finally:
        server.stop()


@pytest.mark.parametrize("path, message", [
    ("fixtures.hooks_record.nope", r"PREFORK\['POST_FORK'\] = 'fixtures.hooks_record.nope': "
                                   r"the hook cannot be imported"),
    ("fixtures.hooks_record.takes_one", r"must accept 2 positional arguments"),
    ("no_such_module.post_fork", r"cannot be imported \(ModuleNotFoundError"),
    ("not a path", r"must be a dotted path"),
])
def test_a_bad_prefork_hook_is_one_line_and_a_failed_start(path, message):
    sys.path.insert(0, str(TESTS_DIR))
    try:
        with pytest.raises(ConfigError, match=message):
            load_config(prefork={"POST_FORK": path})
    finally:
        sys.path.remove(str(TESTS_DIR))
    server = Server(settings="fixtures.hooks_bad_settings", env={"BAD_HOOK_PATH": path})
    server.start(wait_workers=None)
    try:
        assert server.wait_exit(timeout=60) != 0
    finally:
        server.stop()
    errors = [line for line in server.lines if "POST_FORK" in line]
    assert len(errors) == 1, server.output


def test_file_hook_wins_over_prefork_path():
    cfg = load_config(prefork={"POST_FORK": "fixtures.hooks_record.post_worker_init",
                               "ON_EXIT": "fixtures.hooks_record.on_exit",
                               "CONFIG": HOOKS_CONF})
    assert cfg.hooks["post_fork"].__module__ == "__config__"
    sys.modules.pop("fixtures.hooks_record", None)
    assert cfg.hooks["on_exit"].__name__ == "on_exit"


def test_pre_exec_runs_in_the_upgrade_child_before_the_exec(tmp_path):
    from test_upgrade import start_new_master, stopped_at_the_end

    log = tmp_path / "hooks.log"
    pidfile = tmp_path / "prefork.pid"
    server = Server("--workers", "1", "--pid", str(pidfile), settings="fixtures.hooks_settings",
                    env={"HOOKS_LOG": str(log)})
    with stopped_at_the_end(server) as new_masters:
        server.start(wait_workers=1)
        new = start_new_master(server, pidfile, workers=1)
        new_masters.append(new)
        (pre_exec,) = calls(log, "pre_exec")
        # The forked child (whose pid the new master keeps through the exec); server.pid is
        # the old master, its parent.
        assert pre_exec[1:] == [str(new), str(server.pid), str(server.pid)]
        # The new master then starts as any master does.
        assert [c[1] for c in calls(log, "on_starting")] == [str(server.pid), str(new)]


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_request_hooks_and_worker_int_in_every_worker_class(tmp_path, worker_class):
    server, log = hook_server(tmp_path, "--workers", "1", "--worker-class", worker_class,
                              source="prefork")
    with server.start(wait_workers=1):
        (worker,) = server.ready_workers()
        assert server.get("/echo?q=2")[0] == 200
        pre = wait_for_hook(log, "pre_request")[0]
        post = wait_for_hook(log, "post_request")[0]
        assert pre[1:] == [str(worker), "GET", "/echo", "q=2"]
        assert post[1:] == [str(worker), "GET", "/echo", "/echo", "200"]
        # QUIT to the worker (gunicorn: worker_int on INT and QUIT), then worker_exit.
        os.kill(worker, signal.SIGQUIT)
        assert wait_for_hook(log, "worker_int")[0][1:] == [str(worker), str(worker)]
        assert wait_for_hook(log, "worker_exit")[0][1:] == [str(worker), str(worker)]
        wait_for_hook(log, "child_exit")
        order = [f[0] for f in read_log(log) if f[0] in ("worker_int", "worker_exit",
                                                          "child_exit")]
        assert order == ["worker_int", "worker_exit", "child_exit"]


def test_workers_share_the_hooks_read_before_the_fork(tmp_path):
    """The -c file runs in the command, the master and the zygote, never once per worker."""
    conf = tmp_path / "counted.conf.py"
    conf.write_text("from fixtures.hooks_record import record as _record\n"
                    "_record('config_read')\n"
                    "workers = 2\n"
                    "def post_worker_init(worker):\n"
                    "    _record('post_worker_init')\n")
    log = tmp_path / "hooks.log"
    server = Server("-c", str(conf), settings="fixtures.conf_settings",
                    env={"HOOKS_LOG": str(log)})
    with server.start(wait_workers=2):
        wait_for_hook(log, "post_worker_init", 2)
        workers = {str(pid) for pid in server.ready_workers()}
        readers = {c[1] for c in calls(log, "config_read")}
        assert readers and not readers & workers, read_log(log)
