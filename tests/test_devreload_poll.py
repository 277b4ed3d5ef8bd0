"""The poll engine of --reload on its own, with a clock the test moves (no sleeps).

The stamps are real files' (mtime_ns, size): each write below sets its mtime explicitly,
so a change never depends on the file system's timestamp granularity.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from django_prefork.server import devreload
from django_prefork.server.devreload import SETTLE, SETTLE_MAX, PollEngine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(devreload, "time", clock)
    return clock


def save(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def watching(path: Path, text: str) -> PollEngine:
    """An engine watching path, saved with text first (at mtime 1 ns)."""
    save(path, text, 1)
    engine = PollEngine(interval=0.5)
    engine.watch({str(path)}, set())
    return engine


def test_a_save_caught_between_truncation_and_write_is_reported_once(tmp_path: Path,
                                                                     clock: Clock):
    views = tmp_path / "views.py"
    engine = watching(views, "TEXT = 'one'\n")
    clock.now += 0.5
    assert engine.changed() is None  # nothing moved

    save(views, "", 2_000_000_000)  # the editor truncated the file...
    clock.now += 0.5
    assert engine.changed() is None  # ...seen, but not reported while it may still move
    assert engine.timeout() == pytest.approx(SETTLE)
    save(views, "TEXT = 'two'\n", 2_000_000_001)  # ...then wrote it
    clock.now += SETTLE
    assert engine.changed() is None  # moved again: still settling
    clock.now += SETTLE
    assert engine.changed() == str(views)  # quiet for SETTLE: one change, the whole save
    clock.now += 0.5
    assert engine.changed() is None


def test_a_file_that_keeps_changing_is_reported_after_settle_max(tmp_path: Path,
                                                                 clock: Clock):
    log = tmp_path / "busy.py"
    engine = watching(log, "0")
    clock.now += 0.5
    reported = None
    for step in range(1, 100):
        save(log, str(step), 1 + step)
        reported = engine.changed()
        if reported:
            break
        clock.now += SETTLE
    assert reported == str(log)
    assert SETTLE_MAX <= step * SETTLE <= SETTLE_MAX + 2 * SETTLE


def test_before_the_interval_nothing_is_scanned(tmp_path: Path, clock: Clock):
    views = tmp_path / "views.py"
    engine = watching(views, "A = 1\n")
    save(views, "A = 2\n", 2)
    clock.now += 0.4
    assert engine.changed() is None
    assert engine.timeout() == pytest.approx(0.1)
    clock.now += 0.1
    assert engine.changed() is None  # seen; reported SETTLE later
    clock.now += SETTLE
    assert engine.changed() == str(views)
