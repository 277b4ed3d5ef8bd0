"""The benchmark's Django views: each one isolates one kind of server work."""

from __future__ import annotations

import os
import time

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
)
from django.views.decorators.csrf import csrf_exempt

from benchproject.data import file_path

BIG = b"x" * (100 * 1024)
#: Loop rounds of the CPU-bound view: roughly 5 ms of CPU on the benchmark machine;
#: bench/scaling.py prints the in-process figure of every run (bench/inprocess.py --path /cpu).
CPU_ROUNDS = 25_000


def hello(request: HttpRequest) -> HttpResponse:
    """A short text: the Django request cycle plus the server, nothing else."""
    return HttpResponse(b"Hello, World!", content_type="text/plain")


def json_view(request: HttpRequest) -> JsonResponse:
    """A small JSON document, as a typical API endpoint."""
    return JsonResponse({"message": "Hello, World!", "id": 1, "items": [1, 2, 3]})


def sleep(request: HttpRequest) -> HttpResponse:
    """50 ms of waiting (I/O-bound): shows how many requests a worker class overlaps.

    Under gevent `time.sleep` is patched (both servers patch before Django loads), so it
    yields; under sync and gthread it blocks the worker or one thread.
    """
    time.sleep(0.05)
    return HttpResponse(b"slept 50 ms", content_type="text/plain")


def cpu(request: HttpRequest) -> HttpResponse:
    """About 5 ms of pure-Python work holding the GIL: a CPU-bound view (templates, JSON
    encoding, business logic) for bench/scaling.py, where threads cannot overlap requests."""
    total = 0
    for i in range(CPU_ROUNDS):
        total += i * i % 7
    return HttpResponse(str(total).encode(), content_type="text/plain")


def big(request: HttpRequest) -> HttpResponse:
    """100 KB in memory: measures the copy and send path for a mid-size body."""
    return HttpResponse(BIG, content_type="application/octet-stream")


def file(request: HttpRequest) -> FileResponse:
    """10 MB from disk: Django hands it to `wsgi.file_wrapper`, so the server may sendfile()."""
    return FileResponse(open(file_path(), "rb"), content_type="application/octet-stream")


@csrf_exempt
def upload(request: HttpRequest) -> HttpResponse:
    """Reads a 1 MB POST body: measures wsgi.input (CSRF off: the client has no token)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return HttpResponse(str(len(request.body)).encode(), content_type="text/plain")


def pid(request: HttpRequest) -> HttpResponse:
    """Which worker answered: for checking by hand how connections spread."""
    return HttpResponse(str(os.getpid()).encode(), content_type="text/plain")
