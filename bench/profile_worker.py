#!/usr/bin/env python3
"""Profile one runprefork worker under load with py-spy, and print where its CPU goes.

    python bench/profile_worker.py --app hello            # plain WSGI hello, sync worker
    python bench/profile_worker.py --app django --duration 15

One worker (so every request goes through the profiled process), wrk keep-alive c=50 as in
the benchmark's first rows, py-spy sampling the worker from outside (it pauses the worker
for each sample, a few µs at 250 Hz, so stacks are consistent; `--nonblocking` avoids the
pause at the price of torn stacks). Nothing in the package is changed or instrumented.
The collapsed stacks are written to bench/results/ (render them with speedscope or
flamegraph.pl), and two tables are printed: functions by self time and by inclusive time, in
% of the samples in which the worker was running.

py-spy comes from PyPI (`pip install py-spy`); it is installed into this interpreter if
missing, unless --py-spy names a binary. It needs ptrace rights on the worker (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    RESULTS_DIR,
    ROWS,
    ServerProcess,
    ensure_python_env,
    ensure_wrk,
    is_zygote,
    load_command,
    run_load,
    wait_ready,
)

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PREFIXES = ("/site-packages/", "/lib/python3")
#: Threads py-spy samples as running while they sleep in time.sleep (the sync worker's
#: request watch wakes once a second; /proc/PID/task/TID/stat shows it using no CPU).
IDLE_SLEEPERS = ("RequestWatch.run_in_thread.<locals>.loop ",)


def short_file(path: str) -> str:
    """django_prefork/http/connection.py rather than an absolute path."""
    for marker in ("django_prefork/", "django/", "gunicorn/", "gevent/", "benchproject/"):
        i = path.find(marker)
        if i >= 0:
            return path[i:]
    for marker in PREFIXES:
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker):].split("/", 1)[-1]
    return path


def _in_app(names: list[str]) -> bool:
    """Whether a stack is in application code: what `HTTPConnection._run` calls directly
    (the app, its close()) or what `Response.send_iterable` iterates (the app's iterable),
    when that frame is not the server's own (django_prefork, socket.py)."""
    for i, name in enumerate(names[:-1]):
        if name.startswith(("HTTPConnection._run ", "Response.send_iterable ")):
            callee = names[i + 1]
            if "(django_prefork/" not in callee and "(socket.py" not in callee:
                return True
    return False


def summarize(raw: Path, top: int) -> str:
    """Self and inclusive time per function from py-spy's collapsed (raw) stacks."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = in_app = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        names = []
        for frame in stack.split(";"):
            match = FRAME_RE.match(frame)
            name = (f"{match['func']} ({short_file(match['file'])})" if match else frame)
            names.append(name)
        if any(name.startswith(IDLE_SLEEPERS) for name in names):
            continue  # sampled as running, but asleep: its thread's utime stays 0 in /proc
        total += count
        if names:
            self_time[names[-1]] += count
        if _in_app(names):
            in_app += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "no samples (is the worker busy? does py-spy have ptrace rights?)"
    out = [f"{total} samples of the running worker; {in_app / total * 100:.1f}% in the "
           "application (its call, its iterable, its close())", "", "self time (where the CPU is):"]
    out += [f"  {n / total * 100:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    out += ["", "inclusive time (the function and what it calls):"]
    out += [f"  {n / total * 100:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=("hello", "django"), default="hello")
    parser.add_argument("--row", help="a bench/run.py row instead of --app")
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--duration", type=int, default=10, help="seconds of sampling")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true",
                        help="count only samples of the thread holding the GIL (py-spy "
                             "--gil): right for gthread, whose threads waiting for the GIL "
                             "are otherwise counted as running; leaves out the time in "
                             "system calls, which run without the GIL")
    parser.add_argument("--nonblocking", action="store_true",
                        help="never pause the worker (less overhead, but torn stacks)")
    parser.add_argument("--py-spy", help="path of the py-spy binary")
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()
    args.anchors, args.anchors_explicit = [], False  # runprefork alone: no anchor to install
    ensure_python_env(args)
    row = ROWS[args.row or ("wsgi-hello" if args.app == "hello" else "django-hello")]

    py_spy = args.py_spy or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() and not shutil.which(py_spy):
        if args.no_install:
            sys.exit("py-spy not found (pip install py-spy)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
        py_spy = str(Path(sys.executable).parent / "py-spy")
    wrk = ensure_wrk(argparse.Namespace(client="wrk", no_install=args.no_install))

    server_args = argparse.Namespace(workers=1, threads=4, worker_connections=1000,
                                     gunicorn_has_no_control_socket=False)
    server = ServerProcess("runprefork", args.worker_class, row, server_args)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now()
    raw = RESULTS_DIR / f"profile-{args.worker_class}-{row.name}-{stamp:%Y-%m-%d-%H%M%S}.txt"
    load = None
    try:
        server.start(1)
        wait_ready(server.port, row)
        # the one worker, not its generation's zygote (a child of the master too)
        worker = next(p for p in server.refresh_workers() if not is_zygote(p))
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            run_load(load_command(wrk, row, server.port, 2, 1, Path(tmp)), 2)  # warm-up
            load = subprocess.Popen(
                load_command(wrk, row, server.port, args.duration + 4, 1, Path(tmp)),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            spy = subprocess.run(
                [py_spy, "record", "--pid", str(worker), "--duration", str(args.duration),
                 "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
                 *(["--nonblocking"] if args.nonblocking else []),
                 *(["--gil"] if args.gil else [])],
                capture_output=True, text=True)
            if spy.returncode != 0:
                sys.exit(f"py-spy failed: {spy.stderr.strip()[-500:]}")
            load.wait(timeout=args.duration + 60)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        server.stop()
    print(f"runprefork {args.worker_class} worker, row {row.name} ({row.title}), "
          f"{args.duration} s at {args.rate} Hz; stacks: {raw}")
    print(summarize(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
