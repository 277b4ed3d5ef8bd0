"""Views the integration tests call over real sockets."""

import hashlib
import logging
import os
import tempfile
import threading
import time

from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from testproject.thirdparty import log as thirdparty_log

log = logging.getLogger(__name__)


def hello(request):
    return HttpResponse("Hello, world", content_type="text/plain")


@csrf_exempt
def echo(request):
    return HttpResponse(request.body, content_type=request.content_type or "text/plain")


@csrf_exempt
def upload(request):
    body = request.body
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


@csrf_exempt
def upload_in_a_cycle(request):
    """As `upload`, with the request in a reference cycle, as Django's auth and messages
    middleware put it (request.user's lazy closure and request._messages refer back to it);
    this project leaves those middleware out."""
    request.cycle = request
    return HttpResponse(str(len(request.body)), content_type="text/plain")


def live_bodies(request):
    """How many request bodies of 512 KB or more this process still holds (requests that
    have ended but that the cyclic GC has not freed yet, and this one's, if any)."""
    import gc

    from django.core.handlers.wsgi import WSGIRequest

    count = sum(1 for obj in gc.get_objects() if isinstance(obj, WSGIRequest)
                and len(getattr(obj, "_body", b"")) >= 512 * 1024)
    return HttpResponse(str(count), content_type="text/plain")


@csrf_exempt
def upload_stream(request):
    """Length and SHA-256 of the body, read in 64 KB pieces (memory stays flat for a large
    upload); `?whole=1` reads `request.body` instead."""
    digest = hashlib.sha256()
    length = 0
    if request.GET.get("whole"):
        body = request.body
        digest.update(body)
        length = len(body)
    else:
        while data := request.read(65536):
            digest.update(data)
            length += len(data)
    return JsonResponse({"length": length, "sha256": digest.hexdigest(),
                         "content_length": request.META.get("CONTENT_LENGTH"),
                         "transfer_encoding": request.META.get("HTTP_TRANSFER_ENCODING")})


@csrf_exempt
def upload_files(request):
    """Name, size and SHA-256 of each uploaded file (a multipart form, as browsers send)."""
    files = {}
    for name, upload in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in upload.chunks():
            digest.update(chunk)
        files[name] = {"name": upload.name, "size": upload.size, "sha256": digest.hexdigest()}
    return JsonResponse({"files": files, "fields": dict(request.POST.items())})


def pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


def download(request):
    return HttpResponse(pattern(int(request.GET.get("size", "1048576"))),
                        content_type="application/octet-stream")


def stream(request):
    count = int(request.GET.get("chunks", "5"))
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(count)),
                                 content_type="text/plain")


def stream_fail(request):
    """A streamed export that breaks after its first row."""

    def rows():
        yield "id,name\n"
        raise RuntimeError("boom: the stream broke on purpose")

    return StreamingHttpResponse(rows(), content_type="text/csv")


def error(request):
    raise RuntimeError("boom: a view raised on purpose")


def sleep(request):
    """Sleep s seconds; with release=PATH, only until that file exists (s is then the most):
    a test holds the request in flight for as long as its checks take, however slow."""
    seconds = float(request.GET.get("s", "0.5"))
    mark = request.GET.get("mark")
    if mark:  # lets a test see that the request is in the worker's hands
        # Whole or not at all: the test reads the pid as soon as the file exists.
        with open(f"{mark}.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(f"{mark}.tmp", mark)
    release = request.GET.get("release")
    if release:
        deadline = time.monotonic() + seconds
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
    else:
        time.sleep(seconds)
    return HttpResponse(f"slept {seconds} in {os.getpid()}", content_type="text/plain")


def log_lines(request):
    """Log the given mark through the app's module logger and a third-party one."""
    mark = request.GET.get("mark", "")
    log.warning("app %s", mark)
    thirdparty_log.warning("thirdparty %s", mark)
    return HttpResponse(f"logged {mark}", content_type="text/plain")


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def environ(request):
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "HTTPS", "SERVER_NAME", "SERVER_PORT", "PATH_INFO",
            "QUERY_STRING",
            "SCRIPT_NAME", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
            "SERVER_PROTOCOL", "REQUEST_METHOD", "SERVER_SOFTWARE")
    data = {k: request.META.get(k) for k in keys}
    data["headers"] = {k: v for k, v in request.META.items() if k.startswith("HTTP_")}
    data["is_secure"] = request.is_secure()
    return JsonResponse(data)


def file_response(request):
    size = int(request.GET.get("size", "1048576"))
    f = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    f.write(pattern(size))
    f.seek(0)
    return FileResponse(f, content_type="application/octet-stream")


def db_connection(request):
    """Hold a DB cursor while sleeping; say which connection this request had."""
    import threading

    from django.db import connection, connections

    seconds = float(request.GET.get("s", "0.5"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        time.sleep(seconds)
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    return JsonResponse({
        "pid": os.getpid(),
        "connection": id(connection.connection),
        "wrapper": id(connections["default"]),
        "thread": threading.get_ident(),
        "name": str(connection.settings_dict["NAME"]),
        "row": row[0],
    })


def exhaust_fds(request):
    """Take every free file descriptor of this worker process for `hold` seconds, starting a
    moment after this response has gone (the EMFILE-on-accept tests). `mark` names a file
    that says "exhausted" once no descriptor is left."""
    hold = float(request.GET.get("hold", "2"))
    mark = request.GET["mark"]

    def take_all() -> None:
        time.sleep(0.3)
        mark_fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        taken = []
        try:
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        os.write(mark_fd, b"exhausted")
        time.sleep(hold)
        for fd in taken:
            os.close(fd)
        os.close(mark_fd)

    threading.Thread(target=take_all, daemon=True).start()
    return HttpResponse(f"taking every descriptor of {os.getpid()}", content_type="text/plain")


def slow_stream(request):
    """A streamed response that sends its first part, then takes `s` seconds for the rest
    (the timeout tests: a request stopped after its response started)."""
    seconds = float(request.GET.get("s", "8"))

    def parts():
        yield "first part\n"
        time.sleep(seconds)
        yield "second part\n"

    return StreamingHttpResponse(parts(), content_type="text/plain")
