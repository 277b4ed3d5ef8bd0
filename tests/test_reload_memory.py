"""The memory a reload costs, measured on the whole process tree (master, zygotes, workers)
from /proc/PID/smaps_rollup, with 4 sync workers (docs/architecture.md, "Memory model")."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from server import (
    Server,
    children_of,
    descendants_of,
    is_zygote,
    tree_pss_kb,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, zygotes"),
]

WORKERS = 4
HUPS = 3
MAX_AFTER = 1.15  # after any number of HUPs, against before the first
MAX_PEAK = 1.5  # at any moment during one (issue 10); measured 1.32-1.36x on 3.11 and 3.12


def steady_tree_pss_kb(pid: int) -> int:
    """The tree's PSS, read twice in a row, the lower reading.

    One reading visits the processes one after another. A fork or an exit in between is
    counted twice: a zygote read before it forks holds all its pages, the new worker read
    after holds half of them again; a zygote read before it exits holds its share, the
    workers read after hold that share too. Such readings showed peaks of 1.45-1.53x that
    no process tree ever had; a state that lasts through two readings is a real one.
    """
    return min(tree_pss_kb(pid), tree_pss_kb(pid))


def warm_up(server: Server) -> None:
    # Each worker serves a few requests, so "before" is a server that has served, as
    # "after" will be.
    for _ in range(8 * WORKERS):
        assert server.get("/hello")[0] == 200


def settled(server: Server) -> bool:
    """One zygote and WORKERS workers, nothing else: the old generation has gone."""
    children = children_of(server.pid)
    return (len(children) == WORKERS + 1 and sum(map(is_zygote, children)) == 1
            and len(descendants_of(server.pid)) == WORKERS + 1)


def test_tree_pss_stays_bounded_over_hups():
    with Server("--workers", str(WORKERS), "--worker-class", "sync") as server:
        server.start(wait_workers=WORKERS)
        # The lean master forks nothing itself: even the first generation has a zygote.
        wait_until(lambda: settled(server), timeout=20, message="a zygote and 4 workers")
        warm_up(server)
        before = tree_pss_kb(server.pid)
        figures = []
        for _ in range(HUPS):
            mark = len(server.lines)
            server.signal(signal.SIGHUP)
            peak = 0
            deadline = time.monotonic() + 60
            while not any("Reload complete" in line for line in server.lines[mark:]):
                assert time.monotonic() < deadline, "the reload did not complete in 60 s"
                peak = max(peak, steady_tree_pss_kb(server.pid))
                time.sleep(0.01)
            wait_until(lambda: settled(server), timeout=30, message="the old workers to exit")
            warm_up(server)
            after = tree_pss_kb(server.pid)
            figures.append((peak, after))
            print(f"tree PSS before {before} kB, peak {peak} kB ({peak / before:.2f}x), "
                  f"after {after} kB ({after / before:.2f}x)")
            assert peak <= MAX_PEAK * before, figures
            assert after <= MAX_AFTER * before, figures
