#!/usr/bin/env python3
"""runprefork alone, across worker classes and worker counts: the figures of docs/scaling.md.

    python bench/scaling.py                              # every scenario and configuration
    python bench/scaling.py --scenarios cpu,io --duration 1 --repeat 1     # a smoke run

For each scenario (a CPU-bound view, an I/O-bound view, slow clients beside normal load) and
each configuration (sync, gthread with 4 and 8 threads, gevent; 1, 2 and 4 workers) it starts
a fresh runprefork and measures it exactly as bench/run.py does (its functions, imported:
the same client, warm-up, CPU over the whole process tree, whole-tree PSS sampler). It prints
a table and appends it as markdown to bench/results/scaling-<date>.md.

Only 127.0.0.1 is contacted; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from nginxfront import Nginx, find_nginx
from run import (
    BENCH_DIR,
    During,
    Measurement,
    MemorySampler,
    Row,
    ServerProcess,
    add_common_arguments,
    cpu_seconds,
    fill_result,
    fmt,
    free_port,
    in_process_cpu,
    is_zygote,
    load_command,
    machine_facts,
    measure,
    prepare,
    print_measurement,
    process_tree,
    render_markdown,
    render_text,
    run_load,
    save_results,
    wait_ready,
)


@dataclass(frozen=True)
class Scenario:
    """One load: the measured row, and optionally slow clients running beside it."""

    name: str
    title: str
    row: Row
    slow_mode: str = ""  # "send" or "read": bench/slowclients.py beside the load
    slow_path: str = ""


#: "Workers vs instances": the same total of workers as one instance or as several behind
#: one nginx (both setups through nginx, so the proxy's cost is on both sides).
INSTANCES_ROW = Row("scale-instances", "Django hello through nginx", "django", "/hello")
INSTANCE_SETUPS = ((1, 2), (2, 1))  # (instances, workers each)

SCENARIOS = {s.name: s for s in (
    Scenario("cpu", "CPU-bound view (~5 ms of Python), keep-alive c=16",
             Row("scale-cpu", "CPU-bound view", "django", "/cpu", clients=16)),
    Scenario("io", "I/O-bound view (50 ms sleep), keep-alive c=100",
             Row("scale-io", "50 ms sleep", "django", "/sleep", clients=100)),
    Scenario("slow-send", "Django hello c=50 while slow clients trickle their requests",
             Row("scale-slow-send", "hello beside slow senders", "django", "/hello"),
             slow_mode="send", slow_path="/hello"),
    Scenario("slow-read", "Django hello c=50 while slow clients read 100 KB slowly",
             Row("scale-slow-read", "hello beside slow readers", "django", "/hello"),
             slow_mode="read", slow_path="/big"),
    Scenario("instances", "Django hello c=50 through nginx: 1 instance x 2 workers against "
             "2 instances x 1 worker", INSTANCES_ROW),
)}


@dataclass(frozen=True)
class Config:
    """One runprefork configuration: worker class, workers, threads (gthread only)."""

    worker_class: str
    workers: int
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.worker_class} x{self.workers}" + (
            f" t{self.threads}" if self.worker_class == "gthread" else "")


def configurations(classes: list[str], workers: list[int], threads: list[int]) -> list[Config]:
    out = []
    for wc in classes:
        for n in workers:
            if wc == "gthread":
                out += [Config(wc, n, t) for t in threads]
            else:
                out.append(Config(wc, n))
    return out


@dataclass
class SlowTally:
    """What the slow clients of one measurement achieved (filled when they finish)."""

    completed: int = 0
    errors: int = 0
    mean_s: float = 0.0


def slow_clients(scenario: Scenario, args: argparse.Namespace, tally: SlowTally
                 ) -> During | None:
    """A `During` for run.measure(): bench/slowclients.py against the server's port for the
    measured load's duration; its result lands in `tally`."""
    if not scenario.slow_mode:
        return None

    @contextlib.contextmanager
    def during(port: int) -> Iterator[None]:
        cmd = [sys.executable, str(BENCH_DIR / "slowclients.py"), "--url",
               f"http://127.0.0.1:{port}{scenario.slow_path}", "--mode", scenario.slow_mode,
               "--clients", str(args.slow_clients), "--duration", str(args.duration),
               "--seconds", str(args.slow_seconds)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            yield None
        finally:
            try:
                out, err = proc.communicate(timeout=args.slow_seconds * 10 + 40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise RuntimeError("slow clients did not finish") from None
        for line in out.splitlines():
            if line.startswith("BENCHJSON "):
                data = json.loads(line[len("BENCHJSON "):])
                tally.completed, tally.errors = data["completed"], data["errors"]
                tally.mean_s = data["mean_s"]
                return
        raise RuntimeError(f"slow clients failed ({proc.returncode}): {err.strip()[-200:]}")

    return during


def measure_instances(instances: int, workers_each: int, args: argparse.Namespace,
                      wrk: str | None, workdir: Path, nginx: str) -> Measurement:
    """run.measure()'s method with several runprefork instances behind one nginx: CPU and
    PSS summed over every tree (the instances' and nginx's)."""
    label = f"{instances} inst x {workers_each} {args.instance_class}"
    result = Measurement("runprefork", args.instance_class, label)
    run_args = argparse.Namespace(**{**vars(args), "workers": workers_each,
                                     "threads": args.thread_counts[0]})
    servers = [ServerProcess("runprefork", args.instance_class, INSTANCES_ROW, run_args)
               for _ in range(instances)]
    front: Nginx | None = None
    row = INSTANCES_ROW
    try:
        for server in servers:
            server.start(workers_each)
            wait_ready(server.port, row)
        front = Nginx(nginx, free_port(), [server.port for server in servers])
        front.start()
        wait_ready(front.port, row)
        if args.warmup > 0:
            run_load(load_command(wrk, row, front.port, args.warmup, args.client_threads,
                                  workdir), args.warmup)
            wait_ready(front.port, row)
        assert front.proc is not None
        roots = [s.proc.pid for s in servers if s.proc is not None] + [front.proc.pid]
        workers = [pid for s in servers for pid in s.refresh_workers() if not is_zygote(pid)]
        before = {pid: cpu_seconds(pid) for root in roots for pid in process_tree(root)}
        sampler = MemorySampler(*roots)
        sampler.start()
        stats = run_load(load_command(wrk, row, front.port, args.duration,
                                      args.client_threads, workdir), args.duration)
        after = {pid: cpu_seconds(pid) for pid in before}
        peak_kb = sampler.stop()
    except Exception as exc:  # reported as a failed line; the run goes on
        result.ok = False
        result.error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        return result
    finally:
        if front is not None:
            front.stop()
        for server in servers:
            server.stop()
    fill_result(result, stats, before, after, workers, peak_kb, args.duration)
    return result


HEADER = ["scenario", "config", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/req",
          "PSS MB tree", "worker CPU %", "slow clients done/err"]


def median_line(scenario: Scenario, label: str, ms: list[Measurement],
                tallies: list[SlowTally]) -> list[str]:
    good = [m for m in ms if m.ok and m.requests]
    if not good:
        return [scenario.name, label, *["n/a"] * (len(HEADER) - 3),
                ms[0].error[:60] if ms else "not run"]
    med = statistics.median
    # Shares sorted per run, then the median of each rank, as bench/run.py's cells.
    ranks = [sorted(m.worker_shares, reverse=True) for m in good if m.worker_shares]
    width = min((len(r) for r in ranks), default=0)
    shares = [med(r[i] for r in ranks) for i in range(width)]
    slow = "-"
    if scenario.slow_mode and tallies:
        slow = (f"{med(t.completed for t in tallies):,.0f} / "
                f"{med(t.errors for t in tallies):,.0f}")
    return [scenario.name, label, fmt(med(m.rps for m in good)),
            fmt(med(m.p50_ms for m in good), 1), fmt(med(m.p99_ms for m in good), 1),
            fmt(med(m.errors for m in good)), fmt(med(m.cpu_per_req_us for m in good)),
            fmt(med(m.peak_mem_mb for m in good), 1),
            ":".join(f"{s * 100:.0f}" for s in shares) or "n/a", slow]


def instances_lines(scenario: Scenario, args: argparse.Namespace, wrk: str | None,
                    workdir: Path, measurements: list[dict[str, object]]) -> list[list[str]]:
    """The "workers vs instances" lines; none (and a line saying why) without nginx."""
    nginx = find_nginx()
    if nginx is None:
        print("  instances: nginx is not installed, scenario skipped", flush=True)
        return []
    lines = []
    for instances, workers_each in INSTANCE_SETUPS:
        ms = []
        for i in range(args.repeat):
            m = measure_instances(instances, workers_each, args, wrk, workdir, nginx)
            ms.append(m)
            measurements.append({"scenario": scenario.name, "config": m.row, **asdict(m)})
            print_measurement(m, f"{scenario.name:9} {m.row:14} #{i + 1}")
        lines.append(median_line(scenario, ms[0].row, ms, []))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="runprefork across worker classes and counts (docs/scaling.md).")
    add_common_arguments(parser)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--worker-classes", default="sync,gthread,gevent")
    parser.add_argument("--worker-counts", default="1,2,4",
                        help="workers per configuration (default 1,2,4)")
    parser.add_argument("--thread-counts", default="4,8",
                        help="gthread threads per configuration (default 4,8)")
    parser.add_argument("--slow-clients", type=int, default=16,
                        help="slow clients beside the load in the slow-* scenarios "
                        "(default 16)")
    parser.add_argument("--instance-class", default="sync",
                        choices=("sync", "gthread", "gevent"),
                        help="worker class of the instances scenario (default sync: nginx "
                        "buffers in front)")
    parser.add_argument("--slow-seconds", type=float, default=2.0,
                        help="how long each slow request's sending or reading takes "
                        "(default 2)")
    args = parser.parse_args(argv)
    args.duration = 10.0 if args.duration is None else args.duration
    args.repeat = 3 if args.repeat is None else args.repeat
    unknown = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    if any(c not in ("sync", "gthread", "gevent") for c in args.worker_classes.split(",")):
        parser.error("worker classes are sync, gthread, gevent")
    try:
        args.worker_counts = [int(n) for n in args.worker_counts.split(",")]
        args.thread_counts = [int(n) for n in args.thread_counts.split(",")]
    except ValueError:
        parser.error("--worker-counts and --thread-counts are comma-separated integers")
    # run.prepare() reads these; scaling.py measures runprefork alone.
    args.anchors, args.anchors_explicit = [], False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = prepare(args)
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    configs = configurations(args.worker_classes.split(","), args.worker_counts,
                             args.thread_counts)
    facts = machine_facts(wrk)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    print(f"plan: {len(scenarios)} scenarios x {len(configs)} configurations x "
          f"{args.repeat} repeats, {args.duration:g} s each (+{args.warmup:g} s warm-up)",
          flush=True)
    app_cpu = {}
    for scenario in scenarios:
        if not scenario.slow_mode:
            cpu = in_process_cpu(scenario.row, 0.5)
            app_cpu[scenario.name] = cpu
            if cpu is not None:
                print(f"in-process {scenario.name}: {cpu * 1e6:,.0f} µs app CPU/request",
                      flush=True)

    table: list[list[str]] = []
    measurements: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for scenario in scenarios:
            if scenario.name == "instances":
                table += instances_lines(scenario, args, wrk, Path(tmp), measurements)
                continue
            for config in configs:
                run_args = argparse.Namespace(**{**vars(args), "workers": config.workers,
                                                 "threads": config.threads})
                ms, tallies = [], []
                for i in range(args.repeat):
                    tally = SlowTally()
                    m = measure("runprefork", config.worker_class, scenario.row, run_args,
                                wrk, Path(tmp), during=slow_clients(scenario, args, tally))
                    ms.append(m)
                    if m.ok:
                        tallies.append(tally)
                    measurements.append({"scenario": scenario.name, "config": config.label,
                                         **asdict(m), "slow": asdict(tally)})
                    print_measurement(m, f"{scenario.name:9} {config.label:14} #{i + 1}")
                table.append(median_line(scenario, config.label, ms, tallies))

    print()
    print(render_text(table, HEADER))
    legend = (f"medians of {args.repeat} run(s); CPU and PSS = the whole process tree "
              "(master, zygote, workers); slow clients: bench/slowclients.py "
              f"x{args.slow_clients}, {args.slow_seconds:g} s per request, beside the load; "
              "CPU µs/req counts the measured load's requests only")
    print("\n" + legend)
    if not args.no_save:
        setup = ("Scenarios: " + "; ".join(f"{s.name}: {s.title}" for s in scenarios)
                 + f". {args.repeat} repeat(s) of {args.duration:g} s; medians.")
        save_results("scaling-", "python bench/scaling.py " + " ".join(sys.argv[1:]),
                     facts, setup, [render_markdown(table, HEADER), "", legend], [],
                     {"args": vars(args), "app_cpu_per_req": app_cpu,
                      "measurements": measurements})
    return 0


if __name__ == "__main__":
    sys.exit(main())
