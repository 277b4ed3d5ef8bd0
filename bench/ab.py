#!/usr/bin/env python3
"""runprefork at another revision against the working tree: an interleaved A/B.

    python bench/ab.py HEAD~1                                  # Django hello, every class
    python bench/ab.py 03bf5c8 --rows wsgi-hello,django-hello --worker-classes gthread \\
        --rounds 8 --duration 5
    python bench/ab.py HEAD --rounds 6                         # A/A: the noise on its own

On this machine one measurement's req/s and CPU per request move by 10% and more from one
minute to the next, so a before/after of two runs minutes apart shows the drift, not the
change. Here both trees are measured in every round, one right after the other, in ABBA
order (the base first in odd rounds, the working tree first in even ones); the result is
the median of each side and the per-round ratios, whose spread says how far to trust it.
Run it against HEAD (an A/A) to see the noise of the moment.

The base revision is checked out with `git worktree` into a temporary folder (removed at the
end); its django_prefork is put first on the servers' PYTHONPATH, with the working tree's
bench project, so that both serve the same app. Each measurement is bench/run.py's
(`measure`: a fresh server, warm-up, wrk, whole-tree CPU from /proc).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from run import (
    REPO_ROOT,
    ROWS,
    Measurement,
    Row,
    add_common_arguments,
    add_selection_arguments,
    check_imports_from,
    check_selection,
    measure,
    prepare,
    revision_tree,
    short_revision,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Interleaved A/B of runprefork: a git "
                                     "revision against the working tree.")
    parser.add_argument("base", help="the revision to compare with (HEAD for an A/A)")
    add_common_arguments(parser)
    add_selection_arguments(parser, rows_default="django-hello")
    parser.add_argument("--rounds", type=int, default=5,
                        help="measurements of each tree per row and class (default 5)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 5.0
    check_selection(parser, args)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.anchors, args.anchors_explicit = [], False  # (what prepare() reads)
    return args


def ratio_line(row: str, wc: str, base: list[Measurement], head: list[Measurement]) -> str:
    """One line of the result: medians of both sides, their ratio, the per-round ratios."""
    pairs = [(b, h) for b, h in zip(base, head, strict=True) if b.ok and h.ok and b.requests
             and h.requests]
    failed = len(base) - len(pairs)
    if not pairs:
        return f"{row:<20} {wc:<8} every round failed: {(base + head)[0].error}"
    rps_b = statistics.median(b.rps for b, _ in pairs)
    rps_h = statistics.median(h.rps for _, h in pairs)
    cpu_b = statistics.median(b.cpu_per_req_us for b, _ in pairs)
    cpu_h = statistics.median(h.cpu_per_req_us for _, h in pairs)
    rps_ratios = sorted(h.rps / b.rps for b, h in pairs)
    cpu_ratios = sorted(h.cpu_per_req_us / b.cpu_per_req_us for b, h in pairs)
    faster = sum(1 for b, h in pairs if h.cpu_per_req_us < b.cpu_per_req_us)
    note = f"  ({failed} failed rounds left out)" if failed else ""
    return (f"{row:<20} {wc:<8} {rps_b:>9,.0f} {rps_h:>9,.0f} {rps_h / rps_b:>6.3f}x "
            f"[{rps_ratios[0]:.2f}-{rps_ratios[-1]:.2f}]  {cpu_b:>7,.0f} {cpu_h:>7,.0f} "
            f"{cpu_h / cpu_b:>6.3f}x [{cpu_ratios[0]:.2f}-{cpu_ratios[-1]:.2f}]  "
            f"{faster}/{len(pairs)}{note}")


Results = dict[tuple[str, str, str], list[Measurement]]  # (side, row, class) -> rounds


def measure_rounds(args: argparse.Namespace, wrk: str | None, rows: list[Row],
                   classes: list[str], base_root: Path, workdir: Path) -> Results:
    """Every row and class, both trees, `args.rounds` times: the base first in odd rounds,
    the working tree first in even ones."""
    results: Results = {}
    for i in range(args.rounds):
        order = [("base", base_root), ("head", REPO_ROOT)]
        if i % 2:
            order.reverse()
        for wc in classes:
            for row in rows:
                for side, root in order:
                    m = measure("runprefork", wc, row, args, wrk, workdir, root=root)
                    results.setdefault((side, row.name, wc), []).append(m)
                    state = (f"{m.rps:,.0f} req/s {m.cpu_per_req_us:,.0f} µs/req" if m.ok
                             else f"FAILED: {m.error}")
                    print(f"  round {i + 1} {row.name} {wc} {side}: {state}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = prepare(args)
    short = short_revision(args.base)
    if short is None:
        sys.exit(f"unknown revision {args.base!r}")
    rows = [ROWS[name] for name in args.rows.split(",")]
    classes = args.worker_classes.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        check_imports_from(REPO_ROOT)
        with revision_tree(short, Path(tmp) / "base") as base_root:
            results = measure_rounds(args, wrk, rows, classes, base_root, Path(tmp))
    print(f"\nbase {short} against the working tree; {args.rounds} rounds of "
          f"{args.duration:g} s, medians; [lowest-highest per-round ratio]; the last column: "
          f"rounds in which the working tree used less CPU per request")
    print(f"{'row':<20} {'class':<8} {'req/s base':>9} {'head':>9} {'ratio':>7} "
          f"{'rounds':<12} {'µs/req base':>7} {'head':>7} {'ratio':>7} {'rounds':<11} "
          f"less CPU")
    for wc in classes:
        for row in rows:
            print(ratio_line(row.name, wc, results[("base", row.name, wc)],
                             results[("head", row.name, wc)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
