"""Views of the demo site: each one shows something about the server that runs it."""

import hashlib
import os
import platform
import time

import django
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

# /sleep/ never sleeps longer than this, whatever ?ms= says.
MAX_SLEEP_MS = 10_000
# /download/ and /upload/ stream at most this much, whatever the request says.
MAX_TRANSFER_BYTES = 200 * 1024 * 1024
CHUNK = 64 * 1024


@require_safe
def home(request):
    return render(
        request,
        "pages/home.html",
        {
            "django_version": django.get_version(),
            "python_version": platform.python_version(),
            "pid": os.getpid(),
            "max_sleep_ms": MAX_SLEEP_MS,
        },
    )


@never_cache
@require_safe
def api_info(request):
    """JSON about the worker process that served this request."""
    return JsonResponse(
        {
            "pid": os.getpid(),
            "django": django.get_version(),
            "python": platform.python_version(),
            "time": timezone.now().isoformat(),
        }
    )


@never_cache
@require_safe
def sleep(request):
    """Sleep ``?ms=`` milliseconds (default 100, at most 10 s): shows how workers share load.

    With the sync worker each process serves one request at a time, so N concurrent
    ``/sleep/?ms=1000`` requests take about ceil(N / WORKERS) seconds in all.
    """
    raw = request.GET.get("ms", "100")
    try:
        ms = int(raw)
    except ValueError:
        return JsonResponse({"error": "ms must be an integer number of milliseconds"}, status=400)
    ms = max(0, min(ms, MAX_SLEEP_MS))
    started = time.monotonic()
    time.sleep(ms / 1000)
    return JsonResponse(
        {
            "slept_ms": ms,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            "pid": os.getpid(),
        }
    )


@never_cache
@require_safe
def health(request):
    """Liveness/readiness for load balancers and probes: touches neither database nor cache."""
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


@never_cache
@require_safe
def client(request):
    """What Django knows about the client: shows a proxy's forwarded headers being trusted.

    ``client_addr`` is the address the nearest trusted proxy saw (the last
    X-Forwarded-For entry, which that proxy appended) when the peer is one of
    ``DEMO_TRUSTED_PROXIES``, else the peer itself. Entries further left were sent by the
    client and prove nothing.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    trusted = remote in getattr(settings, "DEMO_TRUSTED_PROXIES", ())
    return JsonResponse(
        {
            "client_addr": forwarded[-1] if trusted and forwarded else remote,
            "remote_addr": remote,
            "x_forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
            "is_secure": request.is_secure(),
            "scheme": request.scheme,
            "wsgi_url_scheme": request.META.get("wsgi.url_scheme"),
            "host": request.get_host(),
            "pid": os.getpid(),
        }
    )


def _pattern_block(seed: str) -> bytes:
    """64 KiB that differ with the seed, so a download cannot pass by sending zeros."""
    return hashlib.shake_256(seed.encode()).digest(CHUNK)


def _size_param(request, name: str = "bytes") -> int | None:
    try:
        size = int(request.GET.get(name, str(1024 * 1024)))
    except ValueError:
        return None
    return size if 0 <= size <= MAX_TRANSFER_BYTES else None


@never_cache
@require_safe
def download(request):
    """Stream ``?bytes=`` bytes (at most 200 MB) of a pattern fixed by ``?seed=``.

    The body is generated chunk by chunk: the worker never holds it, as a large export
    should not. The client can rebuild the same bytes and compare hashes.
    """
    size = _size_param(request)
    if size is None:
        return JsonResponse({"error": f"bytes must be 0-{MAX_TRANSFER_BYTES}"}, status=400)
    block = _pattern_block(request.GET.get("seed", "demo"))

    def chunks():
        left = size
        while left > 0:
            piece = block[: min(left, CHUNK)]
            left -= len(piece)
            yield piece

    response = StreamingHttpResponse(chunks(), content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    return response


@csrf_exempt  # a demo endpoint for scripts; a real upload form keeps its CSRF token
@require_POST
def upload(request):
    """Read the request body in chunks and answer its size and SHA-256.

    Reads ``request`` as a stream (never ``request.body``), so a large upload costs one
    chunk of memory, and DATA_UPLOAD_MAX_MEMORY_SIZE does not apply.
    """
    digest = hashlib.sha256()
    size = 0
    while chunk := request.read(CHUNK):
        size += len(chunk)
        if size > MAX_TRANSFER_BYTES:
            return JsonResponse({"error": f"at most {MAX_TRANSFER_BYTES} bytes"}, status=413)
        digest.update(chunk)
    return JsonResponse({"bytes": size, "sha256": digest.hexdigest(), "pid": os.getpid()})
