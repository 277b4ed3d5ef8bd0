"""The metrics board in one process: slots, lanes, folding, label limits."""

from __future__ import annotations

import os

from django_prefork.metrics.board import LABELS, MetricsBoard
from django_prefork.metrics.exposition import MasterNumbers, render
from django_prefork.metrics.recorder import RequestRecorder, ThreadedRecorder
from django_prefork.workers.loadboard import LoadBoard


def new_board() -> tuple[MetricsBoard, int]:
    fd = LoadBoard().fd
    return MetricsBoard.create(fd), fd


def test_a_worker_finds_the_board_only_when_the_master_made_one() -> None:
    assert MetricsBoard.attach(LoadBoard().fd) is None
    board, fd = new_board()
    attached = MetricsBoard.attach(fd)
    assert attached is not None
    base = attached.join(4242)
    assert base is not None
    RequestRecorder(attached, base, None).request_started().request_finished(
        "GET", "200 OK", 10, 0.002)
    assert board.totals().requests == {("GET", "200"): 1}


def test_folding_keeps_counts_and_frees_the_slots() -> None:
    board, _ = new_board()
    pid = 777
    main = board.join(pid)
    assert main is not None
    threaded = ThreadedRecorder(board, pid, main, None)
    threaded.connection_accepted()
    threaded.request_started().request_finished("POST", "201 Created", 5, 0.0001)
    in_flight = threaded.request_started()
    totals = board.totals()
    assert totals.in_flight == 1 and totals.busy_workers == 1
    assert board.fold(pid) == 2  # the shared slot and this thread's lane
    in_flight.request_finished("GET", "200 OK", 1, 0.1)  # (a dead worker writes no more)
    totals = board.totals()
    assert totals.requests == {("POST", "201"): 1}
    assert totals.accepted == 1 and totals.response_bytes == 5
    assert totals.in_flight == 0 and totals.busy_workers == 0
    assert board.join(pid + 1) == main  # the slot is free again


def test_labels_cannot_grow_without_bound() -> None:
    board, _ = new_board()
    base = board.join(os.getpid())
    recorder = RequestRecorder(board, base, None)
    for code in range(200, 200 + LABELS + 20):
        recorder.request_started().request_finished("GET", f"{code} X", 0, 0.0)
    recorder.request_started().request_finished("BREW", "999 Nope", 0, 0.0)
    requests = board.totals().requests
    assert len(requests) == LABELS
    assert sum(requests.values()) == LABELS + 21
    assert requests[("other", "other")] == 22  # the 21 pairs past LABELS - 1 blocks, BREW
    text = render(board.totals(), MasterNumbers(workers=1)).decode()
    assert 'prefork_requests_total{method="other",status="other"} 22' in text
    assert 'prefork_request_duration_seconds_bucket{le="0.001"} ' + str(LABELS + 21) in text
