#!/usr/bin/env python3
"""runprefork against gunicorn, with granian and uWSGI as anchors: same app, same workers,
same load, measured in the same run.

    python bench/run.py                 # every row, every worker class, 3 repeats (~50 min)
    python bench/run.py --quick         # 3 rows, 3 s each, 1 repeat: a smoke run
    python bench/run.py --rows wsgi-hello,django-hello --worker-classes sync --duration 3

For every (worker class, row) it starts a fresh runprefork and a fresh gunicorn (and, with
the first worker class, each anchor in its own best configuration), in alternating order,
warms each up, drives it with wrk (or bench/loadgen.py without wrk), and reads the server's
CPU time and its whole process tree's memory from /proc. Medians over the repeats go in a
table, side by side with the ratio, then PASS/FAIL for the targets (issues 6, 13, 16). The
table is also written as markdown to bench/results/<date>.md (raw numbers in a .json beside it).

Why this shape:
* A new server per measurement: peak memory and CPU belong to that row alone.
* Alternating order and medians: a noisy neighbour on a 2-core machine hits both servers.
* CPU from /proc (utime+stime of master and workers): req/s alone hides a server that is
  fast only because it had the machine to itself; CPU per request does not.
* The in-process reference (bench/inprocess.py) gives the app's own CPU per request, so each
  row shows how much of the server's CPU went into the application.

Only 127.0.0.1 is ever contacted; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_DIR = BENCH_DIR / ".venv"
#: What the servers and the harness import. django_prefork itself is NOT installed: it is
#: imported from the working tree (PYTHONPATH), so the benchmark measures the checked-out code.
REQUIRED_MODULES = ("django", "httptools", "setproctitle", "gunicorn", "gevent", "packaging")
#: The package's own requirements (setup.py install_requires and the gevent extra) plus
#: gunicorn, the comparison: bench-only, never a dependency of the package. gunicorn's
#: gevent worker imports `packaging`, which gunicorn does not declare.
VENV_REQUIREMENTS = ("Django>=5.2", "httptools>=0.6.4", "setproctitle>=1.3", "gevent>=24.2",
                     "gunicorn", "packaging")

SERVERS = ("runprefork", "gunicorn")
#: The anchors (issue 16): other fast WSGI servers, measured once per row in their own best
#: configuration for the same number of workers (docs/benchmarks.md, "Anchors"). Bench-only.
ANCHORS = ("granian", "uwsgi", "bjoern", "lean-python", "lean-core", "lean-c",
           "lean-gevent-python", "lean-gevent-c")
#: The anchors issue 16's item 2 measures runprefork against, and the default of --anchors.
#: The others are ceilings, measured only when asked for and never the "better anchor":
#: bjoern (a C server without policy: bench/bjoern_serve.py) and the lean loops of
#: bench/lean_loop.py (no policy in Python, our HTTP core without its worker, a core in C).
TARGET_ANCHORS = ("granian", "uwsgi")
#: The worker-class slot of an anchor's cells: an anchor has one configuration, not three.
ANCHOR_CLASS = "own"
#: pip requirements of each anchor, tried in order: pyuwsgi is a wheel (no compiler needed),
#: uwsgi is the source package, built only when no wheel fits.
ANCHOR_REQUIREMENTS = {"granian": ("granian",), "uwsgi": ("pyuwsgi", "uwsgi"),
                       "bjoern": ("bjoern",)}
#: Debian packages an anchor's build needs (bjoern compiles against libev).
ANCHOR_DEBIAN_PACKAGES = {"bjoern": ("libev-dev",)}
METRICS_RE = re.compile(r"Metrics at: (http://127\.0\.0\.1:\d+/metrics)")
WORKER_CLASSES = ("sync", "gthread", "gevent")
#: The code issue 16 measured: its item 4 asks the gevent `Connection: close` row for 1.5x
#: that code's req/s. bench/run.py measures it in the same run (a git worktree), as the
#: server kind BASELINE, on that row only (`--baseline none`: not at all).
ISSUE16_BASE = "ecfad29"
BASELINE = "baseline"
BASELINE_CELL = ("gevent", "wsgi-hello-close")
LISTEN_RE = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
SLEEP_SECONDS = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Row:
    """One workload: which app, which request, how many clients, keep-alive or not."""

    name: str
    title: str
    app: str  # "hello" (plain WSGI) or "django"
    path: str
    clients: int = 50
    keepalive: bool = True
    method: str = "GET"
    body_size: int = 0
    #: runprefork runs with --metrics-bind and /metrics is scraped every second (issue 13);
    #: gunicorn runs as on the plain row, and the anchors skip it.
    metrics: bool = False


APPS = {
    # app: (settings module, module with `application`): the same for both servers.
    "hello": ("benchproject.settings_hello", "benchproject.hello"),
    "django": ("benchproject.settings", "benchproject.wsgi"),
}

ROWS = {row.name: row for row in (
    Row("wsgi-hello", "plain WSGI hello, keep-alive c=50", "hello", "/"),
    Row("wsgi-hello-close", "plain WSGI hello, Connection: close c=50", "hello", "/",
        keepalive=False),
    Row("django-hello", "Django hello, keep-alive c=50", "django", "/hello"),
    Row("django-hello-close", "Django hello, Connection: close c=50", "django", "/hello",
        keepalive=False),
    Row("django-json", "Django JSON, keep-alive c=50", "django", "/json"),
    Row("django-sleep50", "Django sleep 50 ms, keep-alive c=100", "django", "/sleep",
        clients=100),
    Row("django-100k", "Django 100 KB body, keep-alive c=50", "django", "/big"),
    Row("django-file-10m", "Django 10 MB FileResponse (file_wrapper), c=50", "django",
        "/file"),
    Row("django-upload-1m", "Django 1 MB POST upload, c=50", "django", "/upload",
        method="POST", body_size=1024 * 1024),
    Row("django-hello-metrics", "Django hello, keep-alive c=50, runprefork with "
        "--metrics-bind scraped every 1 s", "django", "/hello", metrics=True),
)}
QUICK_ROWS = ("wsgi-hello", "django-hello", "django-sleep50")


# -- environment ---------------------------------------------------------------------------

def missing_modules() -> list[str]:
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def anchor_command(name: str) -> list[str] | None:
    """How to start an anchor from this interpreter's environment; None if it is absent."""
    bin_dir = Path(sys.executable).parent
    if name == "granian":
        return [sys.executable, "-m", "granian"] if importlib.util.find_spec("granian") \
            else None
    if name == "bjoern":
        return [sys.executable, str(BENCH_DIR / "bjoern_serve.py")] \
            if importlib.util.find_spec("bjoern") else None
    if name.startswith("lean-"):  # (nothing to install; "lean-c" compiles its probe at start)
        return [sys.executable, str(BENCH_DIR / "lean_loop.py"), name.removeprefix("lean-")]
    # pyuwsgi and uwsgi both install a `uwsgi` script beside the interpreter.
    script = bin_dir / "uwsgi"
    return [str(script)] if script.exists() else None


def install_anchor(name: str) -> bool:
    """pip install one anchor into this interpreter (bench/.venv): True if it is usable."""
    packages = ANCHOR_DEBIAN_PACKAGES.get(name, ())
    if packages:
        apt_get_install(packages)
    for requirement in ANCHOR_REQUIREMENTS[name]:
        print(f"[bench] installing {requirement} (anchor {name})", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                               requirement], capture_output=True, text=True)
        if done.returncode == 0 and anchor_command(name):
            return True
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"[bench] {requirement} not installed: {tail[:200]}", flush=True)
    return False


def ensure_python_env(args: argparse.Namespace) -> None:
    """Use this interpreter if it has everything; else re-run inside bench/.venv, made here.

    The venv keeps gunicorn, gevent and the anchors out of whatever environment the
    developer works in: anchors are installed into bench/.venv only, never elsewhere. An
    anchor that cannot be installed is left out when --anchors was not given (the default
    is "those that can be installed"), and stops the run when it was asked for by name.
    """
    missing = missing_modules()
    absent = [name for name in args.anchors if anchor_command(name) is None]
    if not missing and not absent:
        return
    venv_python = VENV_DIR / "bin" / "python"
    in_venv = Path(sys.executable) == venv_python
    if missing and args.no_install:
        sys.exit(f"missing Python packages: {', '.join(missing)} "
                 f"(pip install {' '.join(VENV_REQUIREMENTS)})")
    if not in_venv and not args.no_install:
        print(f"[bench] {', '.join(missing + absent)} missing here: using {VENV_DIR}",
              flush=True)
        if not venv_python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
        # The running script (run.py or scaling.py) again, inside the venv.
        os.execv(str(venv_python), [str(venv_python), str(Path(sys.argv[0]).resolve()),
                                    *sys.argv[1:]])
    if missing:  # inside the venv: install the servers' requirements once
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade",
                        "pip"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        *VENV_REQUIREMENTS], check=True)
    unusable = [name for name in absent if args.no_install or not install_anchor(name)]
    if unusable and args.anchors_explicit:
        sys.exit(f"anchors {', '.join(unusable)} are not installed and could not be "
                 f"(pip install {' '.join(ANCHOR_REQUIREMENTS[unusable[0]])} into "
                 f"{VENV_DIR}, or --anchors none)")
    if unusable:
        print(f"[bench] anchors left out (not installable): {', '.join(unusable)}",
              flush=True)
    args.anchors = [name for name in args.anchors if name not in unusable]


def apt_get_install(packages: tuple[str, ...]) -> None:
    """Debian's packages, when we are root (an `apt-get update` first if they are unknown)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    print(f"[bench] installing {' '.join(packages)} (apt-get install -y)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(cmd, env=env, capture_output=True)


def ensure_wrk(args: argparse.Namespace) -> str | None:
    """Path of wrk, installing Debian's package when we are root; None means loadgen.py."""
    if args.client == "python":
        return None
    found = shutil.which("wrk")
    if found or args.no_install:
        return found
    apt_get_install(("wrk",))
    found = shutil.which("wrk")
    if not found:
        print("[bench] wrk not available: using bench/loadgen.py (slower client)", flush=True)
    return found


def server_env(settings: str, root: Path = REPO_ROOT) -> dict[str, str]:
    """Environment of every server and helper: the bench project and the tree whose
    django_prefork is measured (the working tree; bench/ab.py passes an older one) first."""
    env = dict(os.environ)
    for name in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS"):
        env.pop(name, None)  # both servers honour these: none may differ between them
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(root)])
    env["DJANGO_SETTINGS_MODULE"] = settings
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_imports_from(root: Path) -> None:
    """The servers must import django_prefork from `root`: an editable install of the
    working tree in this interpreter would win over PYTHONPATH and measure it twice."""
    settings = APPS["django"][0]
    out = subprocess.run(
        [sys.executable, "-c", "import django_prefork; print(django_prefork.__file__)"],
        capture_output=True, text=True, env=server_env(settings, root), cwd=tempfile.gettempdir())
    found = Path(out.stdout.strip() or "?").resolve()
    if root.resolve() not in found.parents:
        sys.exit(f"django_prefork imports from {found}, not from {root}: run bench/ with an "
                 "interpreter that does not have the package installed (for example "
                 "bench/.venv/bin/python)")


def short_revision(rev: str) -> str | None:
    """`rev` as a short commit id, or None if this checkout does not have it."""
    out = subprocess.run(["git", "rev-parse", "--short", "--verify", "--quiet",
                          f"{rev}^{{commit}}"], cwd=REPO_ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@contextlib.contextmanager
def revision_tree(rev: str, where: Path) -> Iterator[Path]:
    """The tree of commit `rev`, checked out (git worktree) at `where` until the end."""
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(where), rev],
                   cwd=REPO_ROOT, check=True)
    try:
        check_imports_from(where)
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=REPO_ROOT,
                       check=False)


def machine_facts(wrk: str | None) -> dict[str, str]:
    """What the numbers depend on, printed with every run and written with the results."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(module: str) -> str:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(module)
        except PackageNotFoundError:
            return "missing"

    def run(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
            else "?"

    commit = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "cpu": model or platform.processor() or "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": version("Django"),
        "gunicorn": version("gunicorn"),
        "granian": version("granian"),
        "uwsgi": version("pyuwsgi") if version("pyuwsgi") != "missing" else version("uWSGI"),
        "gevent": version("gevent"),
        "httptools": version("httptools"),
        "client": " ".join(run([wrk, "--version"]).split()[:2]) if wrk
        else "bench/loadgen.py (asyncio)",
        "commit": commit + (" (uncommitted changes)" if dirty not in ("", "?") else ""),
    }


# -- /proc ---------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()  # the name may hold spaces and parens


def children_of(pid: int) -> list[int]:
    """Live children of pid, from /proc (no names involved)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == pid and fields[0] != b"Z":
                found.append(int(entry))
    return sorted(found)


def is_zygote(pid: int) -> bool:
    """runprefork's zygote names itself so in its process title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"zygote" in f.read()
    except OSError:
        return False


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> int | None:
    """PSS (shared pages split between their users) if the kernel has smaps_rollup, else RSS.

    PSS is fair to a server whose workers share pages with the master (fork) and to one whose
    workers are fresh interpreters: RSS would count shared pages in full in every worker.
    """
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return None


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants (the master, its zygotes and its workers)."""
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children_of(parent)]
        tree.extend(frontier)
    return tree


class MemorySampler(threading.Thread):
    """Samples the whole server's memory a few times a second: the sum over the process tree
    (master, zygotes, workers), whose peak is what the machine must have. Several roots (a
    load balancer and its instances) are summed in each sample."""

    def __init__(self, *roots: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = sum(memory_kb(pid) or 0 for root in self.roots for pid in process_tree(root))
        self.peak_kb = max(self.peak_kb, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; return the peak in kB."""
        self._stop_event.set()
        self.join(timeout=5)
        self.sample()
        return self.peak_kb


# -- servers -------------------------------------------------------------------------------

def free_port() -> int:
    """A port free on 127.0.0.1 now, for the anchors, which print no port they were given 0
    for (a race with another process binding it is possible, and fails the start loudly)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listen_backlog() -> int:
    """The accept queue the kernel allows (uWSGI refuses to start above it)."""
    try:
        return min(2048, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):
        return 128


def anchor_args(kind: str, row: Row, port: int, args: argparse.Namespace) -> list[str]:
    """Each anchor's best comparable configuration: the same number of worker processes,
    its own concurrency model, no access log (docs/benchmarks.md, "Anchors")."""
    _, module = APPS[row.app]
    if kind == "bjoern" or kind.startswith("lean-"):
        return [str(port), str(args.workers), module]
    if kind == "granian":
        return ["--interface", "wsgi", "--http", "1", "--host", "127.0.0.1", "--port",
                str(port), "--workers", str(args.workers), "--blocking-threads",
                str(args.granian_blocking_threads), "--backlog", str(listen_backlog()),
                "--log-level", "warning", f"{module}:application"]
    # uWSGI: a master (it respawns workers and, with --die-on-term, stops them all on one
    # TERM), the app loaded once and forked, one request at a time per process.
    # --http-socket answers one request per connection. Its keep-alive variant,
    # --http11-socket, keeps a single-threaded process on one connection for as long as
    # the client keeps it: 2 of 50 clients are served and 48 wait (docs/benchmarks.md).
    # Its responses do not say "Connection: close", so wrk counts each close as a read
    # error (the response was complete); adding the header with --add-header cost it 60%
    # of its req/s in a smoke run: the errors are noted under the table instead.
    return ["--http-socket", f"127.0.0.1:{port}", "--processes", str(args.workers), "--master",
            "--module", f"{module}:application", "--disable-logging", "--die-on-term",
            "--need-app", "--thunder-lock", "--single-interpreter",
            "--listen", str(listen_backlog())]


class ServerProcess:
    """One server's master (runprefork, gunicorn or an anchor): start it, learn its port and
    workers, stop it."""

    def __init__(self, kind: str, worker_class: str, row: Row, args: argparse.Namespace,
                 root: Path = REPO_ROOT) -> None:
        self.kind = kind
        settings, module = APPS[row.app]
        common = ["--bind", "127.0.0.1:0", "--workers", str(args.workers),
                  "--worker-class", worker_class, "--timeout", "30"]
        if worker_class == "gthread":
            common += ["--threads", str(args.threads)]
        if worker_class in ("gthread", "gevent"):
            common += ["--worker-connections", str(args.worker_connections)]
        self.port = 0
        self.metrics_url = ""
        self.wants_metrics = kind == "runprefork" and row.metrics
        if kind == "runprefork":
            self.cmd = [sys.executable, "-m", "django", "runprefork", f"--settings={settings}",
                        *common]
            if self.wants_metrics:
                self.cmd += ["--metrics-bind", "127.0.0.1:0"]
        elif kind == "gunicorn":
            self.cmd = [sys.executable, "-m", "gunicorn", *common, f"{module}:application"]
            if args.gunicorn_has_no_control_socket:
                self.cmd.insert(3, "--no-control-socket")  # shared path across instances
        else:
            launcher = anchor_command(kind)
            if launcher is None:
                raise RuntimeError(f"anchor {kind} is not installed")
            self.port = free_port()
            self.cmd = [*launcher, *anchor_args(kind, row, self.port, args)]
        self.env = server_env(settings, root)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.workers: list[int] = []
        self._known: set[int] = set()

    def start(self, n_workers: int, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.port or (self.wants_metrics and not self.metrics_url):
            for line in self.lines[:]:
                match = LISTEN_RE.search(line)
                if match and not self.port:
                    self.port = int(match.group(1))
                match = METRICS_RE.search(line)
                if match:
                    self.metrics_url = match.group(1)
            self._check_alive(deadline)
            time.sleep(0.05)
        # Workers are the master's children (runprefork's zygote aside) for every server:
        # the workers runprefork's zygote forks are re-parented to the master (a subreaper),
        # gunicorn's and uWSGI's masters fork theirs, granian starts its as child processes.
        while True:
            self.workers = children_of(self.proc.pid)
            self._known |= set(self.workers)
            if len([pid for pid in self.workers if not is_zygote(pid)]) >= n_workers:
                break
            self._check_alive(deadline)
            time.sleep(0.05)

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(self.lines[-15:])
            raise RuntimeError(f"{self.kind} did not start (exit {self.proc.poll()}):\n{tail}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def refresh_workers(self) -> list[int]:
        assert self.proc is not None
        self.workers = children_of(self.proc.pid)
        self._known |= set(self.workers)
        return self.workers

    def stop(self) -> None:
        """TERM the master, wait, then KILL it and any worker it left, all by PID."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self._known |= set(children_of(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self._known:
            fields = _stat_fields(pid)
            if fields is not None and fields[0] != b"Z":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_ready(port: int, row: Row, timeout: float = 60.0) -> None:
    """Until the app answers 2xx (gunicorn workers load the app after they are forked)."""
    deadline = time.monotonic() + timeout
    body = b"x" * row.body_size if row.body_size else None
    last = ""
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{row.path}", data=body,
                                     method=row.method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
                if 200 <= resp.status < 300:
                    return
        except (OSError, urllib.error.HTTPError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"no 2xx from {row.path} within {timeout}s: {last}")


# -- load ----------------------------------------------------------------------------------

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


def wrk_script(row: Row, workdir: Path) -> Path:
    """The Lua script for a row: method, body, Connection header, and a JSON summary."""
    lines = []
    if row.method != "GET":
        lines.append(f'wrk.method = "{row.method}"')
    if row.body_size:
        lines.append(f'wrk.body = string.rep("x", {row.body_size})')
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    if not row.keepalive:
        lines.append('wrk.headers["Connection"] = "close"')
    path = workdir / f"{row.name}.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def load_command(wrk: str | None, row: Row, port: int, duration: float, threads: int,
                 workdir: Path) -> list[str]:
    url = f"http://127.0.0.1:{port}{row.path}"
    if wrk:
        return [wrk, f"-t{min(threads, row.clients)}", f"-c{row.clients}",
                f"-d{max(1, round(duration))}s", "--timeout", "10s",
                "-s", str(wrk_script(row, workdir)), url]
    cmd = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--url", url, "--clients",
           str(row.clients), "--duration", str(duration), "--method", row.method]
    if row.body_size:
        cmd += ["--body-size", str(row.body_size)]
    if not row.keepalive:
        cmd.append("--close")
    return cmd


def run_load(cmd: list[str], duration: float) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-500:]}")


# -- one measurement -----------------------------------------------------------------------

@dataclass
class Measurement:
    server: str
    worker_class: str
    row: str
    ok: bool = True
    error: str = ""
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    cpu_per_req_us: float = 0.0
    peak_mem_mb: float = 0.0
    worker_shares: list[float] = field(default_factory=list)


class MetricsScraper(threading.Thread):
    """GETs runprefork's /metrics once a second during the load, as Prometheus would: the
    metrics row measures serving with metrics on *and* read (issue 13)."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        # The first scrape as the load starts, then one a second: even a 1 s smoke run
        # reads /metrics under load.
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    body = resp.read()
                if b"prefork_requests_total" not in body:
                    self.failures.append("no prefork_requests_total in /metrics")
            except (OSError, urllib.error.HTTPError) as exc:
                self.failures.append(str(exc))
            self.scrapes += 1
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> str:
        """Stop scraping; an error text if a scrape failed, else ""."""
        self._stop_event.set()
        self.join(timeout=10)
        if not self.scrapes:
            return "no /metrics scrape during the load"
        if self.failures:
            return f"{len(self.failures)} of {self.scrapes} /metrics scrapes failed: " \
                   f"{self.failures[0][:80]}"
        return ""


#: Something run beside the measured load (bench/scaling.py's slow clients): called with
#: the server's port, entered before the load starts and left after it; what it yields is
#: ignored, and an exception it raises fails the measurement.
During = Callable[[int], AbstractContextManager[object]]


def measure(kind: str, worker_class: str, row: Row, args: argparse.Namespace, wrk: str | None,
            workdir: Path, during: During | None = None, root: Path = REPO_ROOT) -> Measurement:
    """Start a server, warm it, load it for `duration` s, read /proc around it, stop it
    (`root`: the tree whose django_prefork runs)."""
    result = Measurement(kind, worker_class, row.name)
    try:
        server = ServerProcess(kind, worker_class, row, args, root)
    except RuntimeError as exc:
        result.ok, result.error = False, str(exc)
        return result
    try:
        server.start(args.workers)
        wait_ready(server.port, row)
        if args.warmup > 0:
            run_load(load_command(wrk, row, server.port, args.warmup, args.client_threads,
                                  workdir), args.warmup)
            # Requests the warm-up client left queued (a sync worker has a backlog of them
            # on the sleep row: 2.5 s of dead connections) are served before this one: the
            # measured load starts on a server that has caught up.
            wait_ready(server.port, row)
        assert server.proc is not None
        children = server.refresh_workers()
        # runprefork's zygote forks the workers and serves nothing: its CPU and memory count
        # as the server's, but it is no worker for the CPU spread.
        workers = [pid for pid in children if not is_zygote(pid)]
        # CPU of the whole tree, as memory: any helper below a worker counts too.
        pids = process_tree(server.proc.pid)
        before = {pid: cpu_seconds(pid) for pid in pids}
        sampler = MemorySampler(server.proc.pid)
        sampler.start()
        scraper = MetricsScraper(server.metrics_url) if server.wants_metrics else None
        if scraper is not None:
            scraper.start()
        try:
            with during(server.port) if during else contextlib.nullcontext():
                stats = run_load(load_command(wrk, row, server.port, args.duration,
                                              args.client_threads, workdir), args.duration)
        finally:
            scrape_error = scraper.stop() if scraper is not None else ""
        after = {pid: cpu_seconds(pid) for pid in pids}
        peak_kb = sampler.stop()
        if scrape_error:  # metrics that cannot be read are a failed row, not a footnote
            raise RuntimeError(scrape_error)
        if set(server.refresh_workers()) != set(children):
            result.error = "a worker was replaced during the run (CPU of the new one not counted)"
    except Exception as exc:  # report the row as failed, go on with the others
        result.ok = False
        result.error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        return result
    finally:
        server.stop()

    fill_result(result, stats, before, after, workers, peak_kb, args.duration)
    return result


def fill_result(result: Measurement, stats: dict[str, Any], before: dict[int, float | None],
                after: dict[int, float | None], workers: list[int], peak_kb: int,
                duration: float) -> None:
    """The measurement's figures from the load generator's summary and the CPU times read
    before and after the load (every PID of the trees measured; `workers` among them)."""
    deltas = {pid: (after.get(pid) or 0.0) - (before[pid] or 0.0) for pid in before
              if before[pid] is not None}
    result.requests = stats["requests"]
    seconds = stats["duration_us"] / 1e6 or duration
    result.rps = stats["requests"] / seconds
    result.p50_ms = stats["p50"] / 1000
    result.p99_ms = stats["p99"] / 1000
    result.errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    result.cpu_s = sum(deltas.values())
    result.cpu_per_req_us = result.cpu_s / result.requests * 1e6 if result.requests else 0.0
    result.peak_mem_mb = peak_kb / 1024
    worker_cpu = [deltas.get(pid, 0.0) for pid in workers]
    total = sum(worker_cpu)
    result.worker_shares = [c / total for c in worker_cpu] if total else []


def in_process_cpu(row: Row, seconds: float, gevent: bool = False) -> float | None:
    """App CPU seconds per request with no server (bench/inprocess.py in a fresh interpreter);
    `gevent`: with the standard library patched first, as both servers' gevent workers run
    the app (patched threading.local, locks and sockets cost the app itself ~7% on Django
    hello: the share of the server's CPU that is the app's own must count them)."""
    settings, module = APPS[row.app]
    cmd = [sys.executable, str(BENCH_DIR / "inprocess.py"), "--settings", settings,
           "--module", module, "--path", row.path, "--method", row.method,
           "--body-size", str(row.body_size), "--seconds", str(seconds)]
    if gevent:
        cmd.append("--gevent")
    if row.path == "/sleep":
        cmd.append("--no-sleep")  # the app's CPU, warm; see inprocess.py
    out = subprocess.run(cmd, capture_output=True, text=True, env=server_env(settings),
                         cwd=REPO_ROOT, timeout=120)
    if out.returncode != 0:
        print(f"[bench] in-process reference failed for {row.name}: {out.stderr.strip()[-300:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["cpu_per_req"]


def reference_key(row: str, worker_class: str) -> str:
    """Which in-process reference a cell is compared with: gevent rows have their own."""
    return f"{row} (gevent-patched)" if worker_class == "gevent" else row


# -- aggregation and report ----------------------------------------------------------------

@dataclass
class Cell:
    """Medians of one (server, class, row) over the repeats."""

    ok: bool
    error: str = ""
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: float = 0.0
    cpu_per_req_us: float = 0.0
    app_share: float | None = None
    peak_mem_mb: float = 0.0
    max_worker_share: float = 0.0
    worker_shares: list[float] = field(default_factory=list)


def aggregate(ms: list[Measurement], app_cpu: float | None) -> Cell:
    good = [m for m in ms if m.ok and m.requests]
    if not good:
        return Cell(False, error=(ms[0].error or "no request completed during the load")
                    if ms else "not run")
    med = statistics.median
    cell = Cell(
        True,
        error="; ".join(sorted({m.error for m in good if m.error})),
        rps=med(m.rps for m in good),
        p50_ms=med(m.p50_ms for m in good),
        p99_ms=med(m.p99_ms for m in good),
        errors=med(m.errors for m in good),
        cpu_per_req_us=med(m.cpu_per_req_us for m in good),
        peak_mem_mb=med(m.peak_mem_mb for m in good),
        max_worker_share=med(max(m.worker_shares, default=0.0) for m in good),
    )
    # Shares sorted per run, then the median of each rank: "50:50" reads as even.
    ranks = [sorted(m.worker_shares, reverse=True) for m in good if m.worker_shares]
    if ranks:
        width = min(len(r) for r in ranks)
        cell.worker_shares = [med(r[i] for r in ranks) for i in range(width)]
    if app_cpu is not None and cell.cpu_per_req_us:
        cell.app_share = app_cpu * 1e6 / cell.cpu_per_req_us
    return cell


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def pair(a: Cell, b: Cell, attr: str, digits: int = 0, pct: bool = False) -> str:
    def one(c: Cell) -> str:
        if not c.ok:
            return "n/a"
        v = getattr(c, attr)
        if v is None:
            return "?"
        return f"{v * 100:.0f}%" if pct else fmt(v, digits)
    return f"{one(a)} / {one(b)}"


def shares(c: Cell) -> str:
    return ":".join(f"{s * 100:.0f}" for s in c.worker_shares) if c.ok else "n/a"


HEADER = ["row", "class", "req/s rp", "req/s gu", "ratio", "p50 ms rp/gu", "p99 ms rp/gu",
          "errors rp/gu", "CPU µs/req rp/gu", "app share rp/gu", "PSS MB tree rp/gu",
          "worker CPU % rp | gu"]
#: Added to HEADER when anchors ran: their req/s (the second table has the rest) and
#: runprefork's ratio to the better of them.
ANCHOR_COLUMNS = ["req/s anchors", "rp/best anchor"]
ANCHOR_HEADER = ["row", "anchor", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/req",
                 "app share", "PSS MB tree", "worker CPU %"]

ANCHOR_LEGEND = ("uwsgi errors: its --http-socket closes the connection after each response "
                 "without a Connection: close header, and wrk counts each such close as a "
                 "read error (the response was complete): about one per request")

Cells = dict[tuple[str, str, str], Cell]


def best_anchor(cells: Cells, anchors: list[str], row: str) -> tuple[str, Cell] | None:
    """The anchor with the most req/s on this row, among those that completed it (the
    target anchors only: the ceiling is not one to beat)."""
    done = [(name, cells[(name, ANCHOR_CLASS, row)]) for name in anchors
            if name in TARGET_ANCHORS and (name, ANCHOR_CLASS, row) in cells
            and cells[(name, ANCHOR_CLASS, row)].ok]
    return max(done, key=lambda item: item[1].rps) if done else None


def table_rows(cells: Cells, rows: list[Row], classes: list[str],
               anchors: list[str]) -> list[list[str]]:
    out = []
    for wc in classes:
        for row in rows:
            rp, gu = cells[("runprefork", wc, row.name)], cells[("gunicorn", wc, row.name)]
            ratio = f"{rp.rps / gu.rps:.2f}x" if rp.ok and gu.ok and gu.rps else "n/a"
            line = [
                row.name, wc, fmt(rp.rps) if rp.ok else "n/a", fmt(gu.rps) if gu.ok else "n/a",
                ratio, pair(rp, gu, "p50_ms", 1), pair(rp, gu, "p99_ms", 1),
                pair(rp, gu, "errors"), pair(rp, gu, "cpu_per_req_us"),
                pair(rp, gu, "app_share", pct=True), pair(rp, gu, "peak_mem_mb", 1),
                f"{shares(rp)} | {shares(gu)}",
            ]
            if anchors:
                measured = [cells.get((name, ANCHOR_CLASS, row.name)) for name in anchors]
                line.append(" / ".join(fmt(c.rps) if c is not None and c.ok else
                                       ("-" if c is None else "n/a") for c in measured))
                best = best_anchor(cells, anchors, row.name)
                line.append(f"{rp.rps / best[1].rps:.2f}x {best[0]}"
                            if best and rp.ok and best[1].rps else "n/a")
            out.append(line)
    return out


def anchor_table_rows(cells: Cells, rows: list[Row], anchors: list[str]) -> list[list[str]]:
    """One line per (row, anchor) the run measured."""
    out = []
    for row in rows:
        for name in anchors:
            c = cells.get((name, ANCHOR_CLASS, row.name))
            if c is None:
                continue
            if not c.ok:
                out.append([row.name, name, *["n/a"] * (len(ANCHOR_HEADER) - 2)])
                continue
            out.append([row.name, name, fmt(c.rps), fmt(c.p50_ms, 1), fmt(c.p99_ms, 1),
                        fmt(c.errors), fmt(c.cpu_per_req_us),
                        f"{c.app_share * 100:.0f}%" if c.app_share is not None else "?",
                        fmt(c.peak_mem_mb, 1), shares(c)])
    return out


def render_text(table: list[list[str]], header: list[str] = HEADER) -> str:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def render_markdown(table: list[list[str]], header: list[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(lines)


def targets(cells: Cells, rows: list[Row], classes: list[str],
            args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(PASS|FAIL|SKIP, target, detail) for each target (issues 6, 13, 16) this run can
    judge."""
    names = {r.name for r in rows}
    out: list[tuple[str, str, str]] = []

    def cell(server: str, wc: str, row: str) -> Cell:
        return cells.get((server, wc, row), Cell(False, error="not run"))

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for wc in classes:
        rp, gu = cell("runprefork", wc, "wsgi-hello"), cell("gunicorn", wc, "wsgi-hello")
        label = f"[{wc}] plain WSGI hello keep-alive: req/s >= 2x gunicorn"
        if "wsgi-hello" not in names or not (rp.ok and gu.ok):
            out.append(("SKIP", label, "row not run or failed"))
        else:
            ratio = rp.rps / gu.rps
            out.append((verdict(ratio >= 2.0), label, f"{ratio:.2f}x"))
    for wc in classes:
        rp, gu = cell("runprefork", wc, "django-hello"), cell("gunicorn", wc, "django-hello")
        label = f"[{wc}] Django hello keep-alive: req/s >= 1.25x gunicorn, app share >= 60%"
        if "django-hello" not in names or not (rp.ok and gu.ok):
            out.append(("SKIP", label, "row not run or failed"))
        else:
            ratio = rp.rps / gu.rps
            share = rp.app_share or 0.0
            out.append((verdict(ratio >= 1.25 and share >= 0.60), label,
                        f"{ratio:.2f}x, app share {share * 100:.0f}%"))
    for wc in classes:  # issue 13: the ratio holds with metrics on and scraped
        rp = cell("runprefork", wc, "django-hello-metrics")
        gu = cell("gunicorn", wc, "django-hello-metrics")
        label = (f"[{wc}] Django hello keep-alive, runprefork with --metrics-bind scraped "
                 "every 1 s: req/s >= 1.25x gunicorn")
        if "django-hello-metrics" not in names or not (rp.ok and gu.ok):
            out.append(("SKIP", label, "row not run or failed"))
        else:
            ratio = rp.rps / gu.rps
            plain_rp, plain_gu = cell("runprefork", wc, "django-hello"), \
                cell("gunicorn", wc, "django-hello")
            without = (f" (without metrics {plain_rp.rps / plain_gu.rps:.2f}x)"
                       if plain_rp.ok and plain_gu.ok else "")
            out.append((verdict(ratio >= 1.25), label, f"{ratio:.2f}x{without}"))
    anchor_rows = [name for name in ("django-hello", "django-100k") if name in names]
    for wc in classes:  # issue 16, item 2
        label = (f"[{wc}] Django hello and Django 100 KB: req/s >= 1.1x the better anchor "
                 f"({'/'.join(TARGET_ANCHORS)})")
        if not args.anchors or not anchor_rows:
            out.append(("SKIP", label, "no anchor or neither row run"))
            continue
        details, ok, judged = [], True, 0
        for name in anchor_rows:
            rp, best = cell("runprefork", wc, name), best_anchor(cells, args.anchors, name)
            if not rp.ok or best is None or not best[1].rps:
                details.append(f"{name}: not measured")
                ok = False
                continue
            judged += 1
            ratio = rp.rps / best[1].rps
            ok = ok and ratio >= 1.1
            details.append(f"{name} {ratio:.2f}x {best[0]}")
        out.append((verdict(ok) if judged else "SKIP", label, ", ".join(details)))
    for wc in classes:  # issue 16, item 3
        rp = cell("runprefork", wc, "django-hello")
        label = f"[{wc}] Django hello keep-alive: app share >= 65%"
        if "django-hello" not in names or not rp.ok or rp.app_share is None:
            out.append(("SKIP", label, "row not run or failed, or no in-process reference"))
        else:
            out.append((verdict(rp.app_share >= 0.65), label,
                        f"app share {rp.app_share * 100:.0f}%"))
    wc, row_name = BASELINE_CELL  # issue 16, item 4
    rev = args.baseline_rev
    label = (f"[{wc}] plain WSGI hello, Connection: close: req/s >= 1.5x the code issue 16 "
             f"measured ({rev or args.baseline}), in this run")
    rp, base = cell("runprefork", wc, row_name), cell(BASELINE, wc, row_name)
    if not rev:
        out.append(("SKIP", label, "baseline not measured (row or class not selected, "
                    "--baseline none, or the revision is not in this checkout)"))
    elif not (rp.ok and base.ok and base.rps):
        out.append(("SKIP", label, "row failed"))
    else:
        ratio = rp.rps / base.rps
        out.append((verdict(ratio >= 1.5), label,
                    f"{rp.rps:,.0f} against {base.rps:,.0f} req/s: {ratio:.2f}x"))
    rp = cell("runprefork", "gevent", "django-sleep50")
    limit = min(ROWS["django-sleep50"].clients, args.workers * args.worker_connections) \
        / SLEEP_SECONDS
    label = (f"[gevent] sleep 50 ms, 100 clients: req/s >= 90% of {limit:,.0f}, "
             "p99 < 150 ms")
    if "django-sleep50" not in names or "gevent" not in classes or not rp.ok:
        out.append(("SKIP", label, "row not run or failed"))
    else:
        out.append((verdict(rp.rps >= 0.9 * limit and rp.p99_ms < 150), label,
                    f"{rp.rps:,.0f} req/s ({rp.rps / limit * 100:.0f}%), p99 {rp.p99_ms:.1f} ms"))

    def every_row(label: str, test: Any, detail: Any) -> None:
        fails, judged = [], 0
        for wc in classes:
            for row in rows:
                rp, gu = cell("runprefork", wc, row.name), cell("gunicorn", wc, row.name)
                if not (rp.ok and gu.ok):
                    continue
                judged += 1
                if not test(rp, gu):
                    fails.append(f"{wc}/{row.name} ({detail(rp, gu)})")
        if not judged:
            out.append(("SKIP", label, "no row with both servers"))
        else:
            out.append((verdict(not fails), label,
                        f"{judged} rows" + (": " + ", ".join(fails) if fails else "")))

    every_row("every row: p99 no worse than gunicorn's", lambda a, b: a.p99_ms <= b.p99_ms,
              lambda a, b: f"{a.p99_ms:.1f} vs {b.p99_ms:.1f} ms")
    every_row("every row: peak whole-tree PSS <= gunicorn's",
              lambda a, b: a.peak_mem_mb <= b.peak_mem_mb,
              lambda a, b: f"{a.peak_mem_mb:.1f} vs {b.peak_mem_mb:.1f} MB")
    even = args.even_tolerance
    every_row(f"every row: even spread, busiest worker <= {even:.2f}x its fair CPU share",
              lambda a, b: a.max_worker_share * args.workers <= even,
              lambda a, b: f"busiest worker {a.max_worker_share * 100:.0f}%")
    failed = [(s, k) for s, k in ((c, (srv, wc, r)) for (srv, wc, r), c in cells.items())
              if not s.ok]
    if failed:
        out.append(("FAIL", "every measurement completed",
                    "; ".join(f"{'/'.join(k)}: {s.error}" for s, k in failed)))
    return out


# -- main ----------------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options bench/run.py and bench/scaling.py share (what measure() reads)."""
    parser.add_argument("--duration", type=float, help="seconds of load per measurement "
                        "(default 10; 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before "
                        "each measurement (default 1)")
    parser.add_argument("--repeat", type=int, help="measurements per server and row; the "
                        "median is reported (default 3; 1 with --quick)")
    parser.add_argument("--worker-connections", type=int, default=1000,
                        help="gthread/gevent worker connections (default 1000, both servers' "
                        "default)")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk",
                        help="load generator (default wrk, bench/loadgen.py if absent)")
    parser.add_argument("--client-threads", type=int, default=1,
                        help="wrk threads (default 1: leaves the cores to the servers)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install anything (no venv, no apt-get)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")


def add_selection_arguments(parser: argparse.ArgumentParser,
                            rows_default: str | None = None) -> None:
    """What is measured, and with how many workers (bench/run.py and bench/ab.py)."""
    default = f" (default {rows_default})" if rows_default else ""
    parser.add_argument("--rows", default=rows_default,
                        help=f"comma-separated, from: {', '.join(ROWS)}{default}")
    parser.add_argument("--worker-classes", default=",".join(WORKER_CLASSES),
                        help="comma-separated (default sync,gthread,gevent)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="workers for every server (default: the number of cores)")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads (default 4)")


def check_selection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rows and worker classes that exist (argparse's error, exit 2, otherwise)."""
    if args.rows:
        unknown = [r for r in args.rows.split(",") if r not in ROWS]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if any(c not in WORKER_CLASSES for c in args.worker_classes.split(",")):
        parser.error(f"worker classes are {', '.join(WORKER_CLASSES)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark runprefork against gunicorn, with granian and uWSGI as anchors "
        "(see docs/benchmarks.md).")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: rows {','.join(QUICK_ROWS)}, 3 s, 1 repeat")
    add_common_arguments(parser)
    add_selection_arguments(parser)
    parser.add_argument("--anchors", help="comma-separated anchors to measure beside gunicorn, "
                        f"from {','.join(ANCHORS)}, or none (default: those of "
                        f"{','.join(TARGET_ANCHORS)} that can be installed; the others "
                        "are ceilings, measured only when named)")
    parser.add_argument("--granian-blocking-threads", type=int, default=1,
                        help="granian's WSGI threads per worker (default 1, see "
                        "docs/benchmarks.md)")
    parser.add_argument("--even-tolerance", type=float, default=1.25,
                        help="busiest worker's CPU share over its fair share, at most "
                        "(default 1.25)")
    parser.add_argument("--baseline", default=ISSUE16_BASE,
                        help="the revision whose gevent wsgi-hello-close req/s issue 16's item 4 "
                        f"is measured against, in the same run (default {ISSUE16_BASE}, the "
                        "code the issue measured), or none")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    check_selection(parser, args)
    parse_anchors(parser, args)
    return args


def parse_anchors(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """args.anchors as a list; args.anchors_explicit: named on the command line (then one
    that cannot be installed stops the run instead of being left out)."""
    args.anchors_explicit = args.anchors is not None
    if args.anchors is None:
        args.anchors = list(TARGET_ANCHORS)
    elif args.anchors == "none":
        args.anchors, args.anchors_explicit = [], False
    else:
        args.anchors = args.anchors.split(",")
        unknown = [a for a in args.anchors if a not in ANCHORS]
        if unknown:
            parser.error(f"unknown anchors {unknown}; choose from {', '.join(ANCHORS)} "
                         "or none")


def prepare(args: argparse.Namespace) -> str | None:
    """Environment, client and gunicorn's flags: what every measuring script does first.
    Returns wrk's path (None: bench/loadgen.py)."""
    ensure_python_env(args)
    wrk = ensure_wrk(args)
    help_text = subprocess.run([sys.executable, "-m", "gunicorn", "--help"],
                               capture_output=True, text=True).stdout
    args.gunicorn_has_no_control_socket = "--no-control-socket" in help_text
    return wrk


def ensure_data_file(rows: list[Row]) -> None:
    """The 10 MB file of the file row, made once in the temporary directory."""
    if any(r.path == "/file" for r in rows):
        data_file = Path(tempfile.gettempdir()) / "django-prefork-bench-10m.bin"
        os.environ["BENCH_FILE"] = str(data_file)
        sys.path.insert(0, str(BENCH_DIR))
        from benchproject.data import ensure_file

        ensure_file()


def baseline_revision(args: argparse.Namespace, rows: list[Row],
                      classes: list[str]) -> str | None:
    """The short commit of --baseline, if this run measures it: the gevent wsgi-hello-close
    row is selected and the checkout has the commit (a tarball or a shallow clone has not:
    then the item 4 target is skipped, with a line saying why)."""
    wc, row = BASELINE_CELL
    if args.baseline == "none" or wc not in classes or row not in {r.name for r in rows}:
        return None
    rev = short_revision(args.baseline)
    if rev is None:
        print(f"[bench] revision {args.baseline} is not in this checkout: the gevent "
              f"{row} row is not measured against it", flush=True)
    return rev


def print_measurement(m: Measurement, label: str) -> None:
    state = (f"{m.rps:,.0f} req/s p99 {m.p99_ms:.1f} ms {m.cpu_per_req_us:,.0f} µs/req "
             f"{m.peak_mem_mb:.1f} MB" if m.ok else f"FAILED: {m.error}")
    print(f"  {label} {state}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = prepare(args)

    rows = [ROWS[name] for name in (args.rows.split(",") if args.rows else
                                    (QUICK_ROWS if args.quick else ROWS))]
    classes = args.worker_classes.split(",")
    anchors: list[str] = args.anchors
    facts = machine_facts(wrk)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    print(f"plan: {len(rows)} rows x {len(classes)} classes x 2 servers x {args.repeat} "
          f"repeats, {args.duration:g} s each (+{args.warmup:g} s warm-up), "
          f"workers={args.workers}, threads={args.threads}, "
          f"worker-connections={args.worker_connections}; anchors "
          f"{', '.join(anchors) or 'none'} once per row", flush=True)
    ensure_data_file(rows)

    # The reference of each (row, worker class), gevent's with the standard library patched:
    # measured again before each repeat, beside the servers it is compared with, and the
    # median taken: one reading of 1 s varies by a few percent from the next (92-99 µs in
    # four in a row, Django hello), and the machine's speed drifts over a long run.
    references: dict[str, list[float]] = {}
    budget = 1.0 if not args.quick else 0.5

    def measure_references(row: Row, patched_too: bool, plain_too: bool) -> None:
        for patched, wanted in ((False, plain_too), (True, patched_too)):
            if not wanted:
                continue
            key = reference_key(row.name, "gevent" if patched else "sync")
            cpu = in_process_cpu(row, budget, gevent=patched)
            if cpu is not None:
                references.setdefault(key, []).append(cpu)
                print(f"  in-process {key}: {cpu * 1e6:,.1f} µs app CPU/request", flush=True)

    args.baseline_rev = baseline_revision(args, rows, classes)
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        baseline_root = None
        if args.baseline_rev:
            check_imports_from(REPO_ROOT)
            baseline_root = stack.enter_context(revision_tree(args.baseline_rev,
                                                              Path(tmp) / "baseline"))
        for wc in classes:
            for row in rows:
                # The anchors have one configuration each, not one per worker class: they are
                # measured with the first class, in the same alternation as the two servers.
                # The metrics row is runprefork's own setting: no anchor there.
                with_anchors = wc == classes[0] and not row.metrics
                kinds = (*SERVERS, *(anchors if with_anchors else ()))
                if baseline_root is not None and (wc, row.name) == BASELINE_CELL:
                    kinds = (*kinds, BASELINE)
                for i in range(args.repeat):
                    measure_references(row, patched_too=wc == "gevent",
                                       plain_too=wc != "gevent" or with_anchors)
                    for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                        slot = ANCHOR_CLASS if kind in ANCHORS else wc
                        if kind == BASELINE:  # runprefork, from the baseline's tree
                            assert baseline_root is not None
                            m = measure("runprefork", slot, row, args, wrk, Path(tmp),
                                        root=baseline_root)
                            m.server = BASELINE
                        else:
                            m = measure(kind, slot, row, args, wrk, Path(tmp))
                        measurements.append(m)
                        print_measurement(m, f"{slot:7} {row.name:20} #{i + 1} {kind:10}")

    medians = {ref: statistics.median(values) for ref, values in references.items()}
    app_cpu: dict[str, float | None] = dict(medians)
    for ref, values in sorted(references.items()):
        print(f"in-process {ref}: {medians[ref] * 1e6:,.1f} µs app CPU/request, "
              f"median of {len(values)} ({min(values) * 1e6:,.1f}-{max(values) * 1e6:,.1f})",
              flush=True)
    cells: Cells = {}
    for m in measurements:
        key = (m.server, m.worker_class, m.row)
        if key not in cells:
            ms = [x for x in measurements if (x.server, x.worker_class, x.row) == key]
            ref = reference_key(m.row, "sync" if m.worker_class == ANCHOR_CLASS
                                else m.worker_class)
            cells[key] = aggregate(ms, app_cpu.get(ref))
    header = HEADER + (ANCHOR_COLUMNS if anchors else [])
    table = table_rows(cells, rows, classes, anchors)
    anchor_table = anchor_table_rows(cells, rows, anchors)
    verdicts = targets(cells, rows, classes, args)
    legend = (f"rp = runprefork, gu = gunicorn; medians of {args.repeat} run(s); errors = "
              "non-2xx/3xx + socket errors; CPU and PSS = the whole process tree; app share = "
              "in-process app CPU / server CPU per request"
              + (f"; req/s anchors = {' / '.join(anchors)}" if anchors else ""))

    print()
    print(render_text(table, header))
    print("\n" + legend)
    if anchor_table:
        print("\nanchors (one configuration each, measured with the "
              f"{classes[0]} rows):\n")
        print(render_text(anchor_table, ANCHOR_HEADER))
        print("\n" + ANCHOR_LEGEND)
    print()
    for state, label, detail in verdicts:
        print(f"{state:4}  {label}: {detail}")

    if not args.no_save:
        command = "python bench/run.py " + " ".join(sys.argv[1:])
        setup = (f"Workers {args.workers}, gthread threads {args.threads}, worker connections "
                 f"{args.worker_connections}, granian blocking threads "
                 f"{args.granian_blocking_threads}; {args.repeat} repeat(s) of "
                 f"{args.duration:g} s; medians.")
        body = [render_markdown(table, header), "", legend]
        if anchor_table:
            body += ["", "Anchors:", "", render_markdown(anchor_table, ANCHOR_HEADER), "",
                     ANCHOR_LEGEND]
        save_results("", command, facts, setup, body, verdicts,
                     {"args": vars(args), "app_cpu_per_req": app_cpu,
                      "app_cpu_samples": references,
                      "measurements": [asdict(m) for m in measurements]})
    # Missed targets are results, not errors; --strict turns them into the exit status.
    return 1 if args.strict and any(s == "FAIL" for s, _, _ in verdicts) else 0


def save_results(prefix: str, command: str, facts: dict[str, str], setup: str,
                 body: list[str], verdicts: list[tuple[str, str, str]],
                 raw: dict[str, Any]) -> None:
    """Append the markdown to bench/results/<prefix><date>.md, the raw numbers beside it."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now()
    md = RESULTS_DIR / f"{prefix}{stamp:%Y-%m-%d}.md"
    text = [f"## Run of {stamp:%Y-%m-%d %H:%M:%S}", "", f"Command: `{command.strip()}`", "",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "", setup, "",
            *body, "", *[f"- **{s}** {label}: {detail}" for s, label, detail in verdicts],
            "", ""]
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n".join(text))
    raw_path = RESULTS_DIR / f"{prefix}{stamp:%Y-%m-%d-%H%M%S}.json"
    raw_path.write_text(json.dumps({"facts": facts, **raw}, indent=1, default=str))
    print(f"\nwritten: {md.relative_to(REPO_ROOT)}, {raw_path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
