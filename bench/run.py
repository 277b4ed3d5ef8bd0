#!/usr/bin/env python3
"""runprefork against gunicorn: same app, same workers, same load, measured in the same run.

    python bench/run.py                 # every row, every worker class, 3 repeats (~40 min)
    python bench/run.py --quick         # 3 rows, 3 s each, 1 repeat: a smoke run
    python bench/run.py --rows wsgi-hello,django-hello --worker-classes sync --duration 3

For every (worker class, row) it starts a fresh runprefork and a fresh gunicorn, in
alternating order, warms each up, drives it with wrk (or bench/loadgen.py without wrk), and
reads the server's CPU time and its workers' memory from /proc. Medians over the repeats go
in a table, side by side with the ratio, then PASS/FAIL for the targets of issue 6. The table
is also written as markdown to bench/results/<date>.md (raw numbers in a .json beside it).

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_DIR = BENCH_DIR / ".venv"
#: What the servers and the harness import. django_prefork itself is NOT installed: it is
#: imported from the working tree (PYTHONPATH), so the benchmark measures the checked-out code.
REQUIRED_MODULES = ("django", "httptools", "setproctitle", "gunicorn", "gevent")
#: The package's own requirements (setup.py install_requires and the gevent extra) plus
#: gunicorn, the comparison: bench-only, never a dependency of the package.
VENV_REQUIREMENTS = ("Django>=5.2", "httptools>=0.6.4", "setproctitle>=1.3", "gevent>=24.2",
                     "gunicorn")

SERVERS = ("runprefork", "gunicorn")
WORKER_CLASSES = ("sync", "gthread", "gevent")
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
)}
QUICK_ROWS = ("wsgi-hello", "django-hello", "django-sleep50")


# -- environment ---------------------------------------------------------------------------

def missing_modules() -> list[str]:
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def ensure_python_env(args: argparse.Namespace) -> None:
    """Use this interpreter if it has everything; else re-run inside bench/.venv, made here.

    The venv keeps gunicorn and gevent out of whatever environment the developer works in.
    """
    missing = missing_modules()
    if not missing:
        return
    venv_python = VENV_DIR / "bin" / "python"
    if Path(sys.executable) == venv_python or args.no_install:
        sys.exit(f"missing Python packages: {', '.join(missing)} "
                 f"(pip install {' '.join(VENV_REQUIREMENTS)})")
    print(f"[bench] {', '.join(missing)} missing here: using {VENV_DIR}", flush=True)
    if not venv_python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    check = subprocess.run([str(venv_python), "-c", "; ".join(
        f"import {m}" for m in REQUIRED_MODULES)], capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(venv_python), "-m", "pip", "install", "--quiet", "--upgrade",
                        "pip"], check=True)
        subprocess.run([str(venv_python), "-m", "pip", "install", "--quiet",
                        *VENV_REQUIREMENTS], check=True)
    os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()),
                                *sys.argv[1:]])


def ensure_wrk(args: argparse.Namespace) -> str | None:
    """Path of wrk, installing Debian's package when we are root; None means loadgen.py."""
    if args.client == "python":
        return None
    found = shutil.which("wrk")
    if found or args.no_install:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("[bench] installing wrk (apt-get install -y wrk)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "wrk"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        print("[bench] wrk not available: using bench/loadgen.py (slower client)", flush=True)
    return found


def server_env(settings: str) -> dict[str, str]:
    """Environment of every server and helper: the working tree and the bench project first."""
    env = dict(os.environ)
    for name in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS"):
        env.pop(name, None)  # both servers honour these: none may differ between them
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(REPO_ROOT)])
    env["DJANGO_SETTINGS_MODULE"] = settings
    env["PYTHONUNBUFFERED"] = "1"
    return env


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
    (master, zygotes, workers), whose peak is what the machine must have."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = sum(memory_kb(pid) or 0 for pid in process_tree(self.root))
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

class ServerProcess:
    """One runprefork or gunicorn master: start it, learn its port and workers, stop it."""

    def __init__(self, kind: str, worker_class: str, row: Row, args: argparse.Namespace) -> None:
        self.kind = kind
        settings, module = APPS[row.app]
        common = ["--bind", "127.0.0.1:0", "--workers", str(args.workers),
                  "--worker-class", worker_class, "--timeout", "30"]
        if worker_class == "gthread":
            common += ["--threads", str(args.threads)]
        if worker_class in ("gthread", "gevent"):
            common += ["--worker-connections", str(args.worker_connections)]
        if kind == "runprefork":
            self.cmd = [sys.executable, "-m", "django", "runprefork", f"--settings={settings}",
                        *common]
        else:
            self.cmd = [sys.executable, "-m", "gunicorn", *common, f"{module}:application"]
            if args.gunicorn_has_no_control_socket:
                self.cmd.insert(3, "--no-control-socket")  # shared path across instances
        self.env = server_env(settings)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.port = 0
        self.workers: list[int] = []
        self._known: set[int] = set()

    def start(self, n_workers: int, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.port:
            for line in self.lines[:]:
                match = LISTEN_RE.search(line)
                if match:
                    self.port = int(match.group(1))
            self._check_alive(deadline)
            time.sleep(0.05)
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


def measure(kind: str, worker_class: str, row: Row, args: argparse.Namespace, wrk: str | None,
            workdir: Path) -> Measurement:
    """Start a server, warm it, load it for `duration` s, read /proc around it, stop it."""
    result = Measurement(kind, worker_class, row.name)
    server = ServerProcess(kind, worker_class, row, args)
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
        pids = [server.proc.pid, *children]
        before = {pid: cpu_seconds(pid) for pid in pids}
        sampler = MemorySampler(server.proc.pid)
        sampler.start()
        stats = run_load(load_command(wrk, row, server.port, args.duration,
                                      args.client_threads, workdir), args.duration)
        after = {pid: cpu_seconds(pid) for pid in pids}
        peak_kb = sampler.stop()
        if set(server.refresh_workers()) != set(children):
            result.error = "a worker was replaced during the run (CPU of the new one not counted)"
    except Exception as exc:  # report the row as failed, go on with the others
        result.ok = False
        result.error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        return result
    finally:
        server.stop()

    deltas = {pid: (after[pid] or 0.0) - (before[pid] or 0.0) for pid in pids
              if before[pid] is not None}
    result.requests = stats["requests"]
    seconds = stats["duration_us"] / 1e6 or args.duration
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
    return result


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
        return Cell(False, error=(ms[0].error if ms else "not run"))
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


def table_rows(cells: dict[tuple[str, str, str], Cell], rows: list[Row],
               classes: list[str]) -> list[list[str]]:
    out = []
    for wc in classes:
        for row in rows:
            rp, gu = cells[("runprefork", wc, row.name)], cells[("gunicorn", wc, row.name)]
            ratio = f"{rp.rps / gu.rps:.2f}x" if rp.ok and gu.ok and gu.rps else "n/a"
            out.append([
                row.name, wc, fmt(rp.rps) if rp.ok else "n/a", fmt(gu.rps) if gu.ok else "n/a",
                ratio, pair(rp, gu, "p50_ms", 1), pair(rp, gu, "p99_ms", 1),
                pair(rp, gu, "errors"), pair(rp, gu, "cpu_per_req_us"),
                pair(rp, gu, "app_share", pct=True), pair(rp, gu, "peak_mem_mb", 1),
                f"{shares(rp)} | {shares(gu)}",
            ])
    return out


def render_text(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def render_markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(lines)


def targets(cells: dict[tuple[str, str, str], Cell], rows: list[Row], classes: list[str],
            args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(PASS|FAIL|SKIP, target, detail) for each target of issue 6 that this run can judge."""
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

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark runprefork against gunicorn (see docs/benchmarks.md).")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: rows {','.join(QUICK_ROWS)}, 3 s, 1 repeat")
    parser.add_argument("--duration", type=float, help="seconds of load per measurement "
                        "(default 10; 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before "
                        "each measurement (default 1)")
    parser.add_argument("--rows", help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--worker-classes", default=",".join(WORKER_CLASSES),
                        help="comma-separated (default sync,gthread,gevent)")
    parser.add_argument("--repeat", type=int, help="measurements per server and row; the "
                        "median is reported (default 3; 1 with --quick)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="workers for both servers (default: the number of cores)")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads (default 4)")
    parser.add_argument("--worker-connections", type=int, default=1000,
                        help="gthread/gevent worker connections (default 1000, both servers' "
                        "default)")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk",
                        help="load generator (default wrk, bench/loadgen.py if absent)")
    parser.add_argument("--client-threads", type=int, default=1,
                        help="wrk threads (default 1: leaves the cores to the servers)")
    parser.add_argument("--even-tolerance", type=float, default=1.25,
                        help="busiest worker's CPU share over its fair share, at most "
                        "(default 1.25)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install anything (no venv, no apt-get)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.rows:
        unknown = [r for r in args.rows.split(",") if r not in ROWS]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    classes = args.worker_classes.split(",")
    if any(c not in WORKER_CLASSES for c in classes):
        parser.error(f"worker classes are {', '.join(WORKER_CLASSES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_python_env(args)
    wrk = ensure_wrk(args)
    help_text = subprocess.run([sys.executable, "-m", "gunicorn", "--help"],
                               capture_output=True, text=True).stdout
    args.gunicorn_has_no_control_socket = "--no-control-socket" in help_text

    rows = [ROWS[name] for name in (args.rows.split(",") if args.rows else
                                    (QUICK_ROWS if args.quick else ROWS))]
    classes = args.worker_classes.split(",")
    facts = machine_facts(wrk)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    print(f"plan: {len(rows)} rows x {len(classes)} classes x 2 servers x {args.repeat} "
          f"repeats, {args.duration:g} s each (+{args.warmup:g} s warm-up), "
          f"workers={args.workers}, threads={args.threads}, "
          f"worker-connections={args.worker_connections}", flush=True)

    if any(r.path == "/file" for r in rows):
        data_file = Path(tempfile.gettempdir()) / "django-prefork-bench-10m.bin"
        os.environ["BENCH_FILE"] = str(data_file)
        sys.path.insert(0, str(BENCH_DIR))
        from benchproject.data import ensure_file

        ensure_file()

    # The reference of each (row, worker class): gevent's with the standard library patched.
    app_cpu: dict[str, float | None] = {}
    for row in rows:
        for patched in sorted({wc == "gevent" for wc in classes}):
            key = reference_key(row.name, "gevent" if patched else "sync")
            app_cpu[key] = in_process_cpu(row, 1.0 if not args.quick else 0.5, gevent=patched)
            if app_cpu[key] is not None:
                print(f"in-process {key}: {app_cpu[key] * 1e6:,.1f} µs app CPU/request",
                      flush=True)

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for wc in classes:
            for row in rows:
                for i in range(args.repeat):
                    order = SERVERS if i % 2 == 0 else SERVERS[::-1]
                    for kind in order:
                        m = measure(kind, wc, row, args, wrk, Path(tmp))
                        measurements.append(m)
                        state = (f"{m.rps:,.0f} req/s p99 {m.p99_ms:.1f} ms "
                                 f"{m.cpu_per_req_us:,.0f} µs/req {m.peak_mem_mb:.1f} MB"
                                 if m.ok else f"FAILED: {m.error}")
                        print(f"  {wc:7} {row.name:18} #{i + 1} {kind:10} {state}", flush=True)

    cells = {}
    for kind in SERVERS:
        for wc in classes:
            for row in rows:
                ms = [m for m in measurements
                      if (m.server, m.worker_class, m.row) == (kind, wc, row.name)]
                cells[(kind, wc, row.name)] = aggregate(ms, app_cpu[reference_key(row.name, wc)])
    table = table_rows(cells, rows, classes)
    verdicts = targets(cells, rows, classes, args)

    print()
    print(render_text(table))
    print("\nrp = runprefork, gu = gunicorn; medians of", args.repeat, "run(s); errors = "
          "non-2xx/3xx + socket errors; CPU = master + workers; app share = in-process app "
          "CPU / server CPU per request")
    print()
    for state, label, detail in verdicts:
        print(f"{state:4}  {label}: {detail}")

    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = dt.datetime.now()
        md = RESULTS_DIR / f"{stamp:%Y-%m-%d}.md"
        command = "python bench/run.py " + " ".join(sys.argv[1:])
        text = [f"## Run of {stamp:%Y-%m-%d %H:%M:%S}", "", f"Command: `{command.strip()}`", "",
                "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
                f"Workers {args.workers}, gthread threads {args.threads}, worker connections "
                f"{args.worker_connections}; {args.repeat} repeat(s) of {args.duration:g} s; "
                "medians.", "", render_markdown(table), "",
                *[f"- **{s}** {label}: {detail}" for s, label, detail in verdicts], "", ""]
        with open(md, "a", encoding="utf-8") as f:
            f.write("\n".join(text))
        raw = RESULTS_DIR / f"{stamp:%Y-%m-%d-%H%M%S}.json"
        raw.write_text(json.dumps({
            "facts": facts, "args": {k: v for k, v in vars(args).items()},
            "app_cpu_per_req": app_cpu,
            "measurements": [asdict(m) for m in measurements],
        }, indent=1))
        print(f"\nwritten: {md.relative_to(REPO_ROOT)}, {raw.relative_to(REPO_ROOT)}")
    # Missed targets are results, not errors; --strict turns them into the exit status.
    return 1 if args.strict and any(s == "FAIL" for s, _, _ in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
