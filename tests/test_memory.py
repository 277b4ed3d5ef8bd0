"""Workers keep freed request-sized memory (base.tune_malloc): bodies freed together (by
the cyclic GC, as Django's request objects are) are reused by the next requests, not handed
back to the kernel and faulted in again. Measured in the worker by `/__wsgi__/refault`
(tests/testproject/wsgi.py), against a worker started with the tuning off."""

from __future__ import annotations

import sys

import pytest

from server import Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc")

PAGES_PER_ROUND = 16 * 256  # 16 MB of 4 KB pages


def refaults(env: dict[str, str] | None = None) -> int:
    with Server("--workers", "1", "--worker-class", "sync", env=env) as server:
        server.start()
        status, _, body = server.get("/__wsgi__/refault")
        assert status == 200, body
        return int(body)


def test_memory_freed_together_is_kept_for_the_next_requests():
    tuned = refaults()
    untuned = refaults({"DJANGO_PREFORK_NO_MALLOPT": "1"})
    print(f"page faults re-allocating 16 MB: {tuned} tuned, {untuned} with glibc's defaults")
    assert tuned < PAGES_PER_ROUND // 8
    assert untuned > PAGES_PER_ROUND // 2  # the check measures something


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_workers_start_with_the_forking_process_objects_frozen(worker_class):
    """Forked from the master (sync) or the zygote (gevent), a worker's cyclic GC leaves the
    objects it was forked with alone (gc.freeze), so their shared pages are not copied."""
    if worker_class == "gevent":
        pytest.importorskip("gevent")
    with Server("--workers", "1", "--worker-class", worker_class) as server:
        server.start()
        status, _, body = server.get("/__wsgi__/gc")
        assert status == 200, body
        assert int(body) > 10_000  # Django and the test project: tens of thousands of objects


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_bodies_the_app_has_finished_with_are_freed(worker_class):
    """Django's requests are reference cycles: a body read into request.body lives until the
    cyclic GC runs, which its allocation counts put off for dozens of requests (40 MB of
    1 MB uploads per sync worker). The HTTP core runs it every BODY_GC_BUDGET bytes of
    bodies (http/body.py BodyCollector), so at most that much stays held."""
    if worker_class == "gevent":
        pytest.importorskip("gevent")
    from django_prefork.http.body import BODY_GC_BUDGET

    body = b"x" * (1024 * 1024)
    uploads = 40
    with Server("--workers", "1", "--worker-class", worker_class) as server:
        server.start()
        conn = server.connection()
        try:
            for _ in range(uploads):
                conn.request("POST", "/upload_in_a_cycle", body=body,
                             headers={"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                assert response.status == 200
                response.read()
            conn.request("GET", "/live_bodies")
            held = int(conn.getresponse().read())
        finally:
            conn.close()
    print(f"{worker_class}: {held} of {uploads} 1 MB bodies still held")
    assert held <= BODY_GC_BUDGET // len(body) + 1
