"""Views of the demo site: each one shows something about the server that runs it."""

import os
import platform
import time

import django
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

# /sleep/ never sleeps longer than this, whatever ?ms= says.
MAX_SLEEP_MS = 10_000


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
