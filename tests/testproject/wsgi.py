"""The test project's WSGI application: Django, behind a tiny WSGI layer for raw cases.

`/__wsgi__/raise` raises before start_response, so the server itself must answer 500 (Django
turns a view's exception into its own 500 response and never lets it reach the server).
`/__wsgi__/parse` (and below it, and `OPTIONS *`) answers with the server's parse of the
request as JSON, for the HTTP conformance corpus (tests/http/corpus/).
"""

import os

from django.core.wsgi import get_wsgi_application

from testproject.parse import application as parse_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_application = get_wsgi_application()


def refaults(megabytes: int = 16) -> int:
    """Page faults of allocating `megabytes` of 1 MB bodies again after freeing them at once,
    as Django's request bodies are when the cyclic GC collects the requests holding them."""
    import resource

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    bodies = [b"\x01" * (1 << 20) for _ in range(megabytes)]  # written, as received
    del bodies  # freed together
    before = faults()
    again = [b"\x01" * (1 << 20) for _ in range(megabytes)]
    after = faults()
    del again
    return after - before


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/__wsgi__/raise":
        raise RuntimeError("boom: the WSGI app raised before start_response")
    if path == "/__wsgi__/echo":
        # Reads wsgi.input to its end, as a WSGI app may for a chunked body (Django reads
        # only CONTENT_LENGTH bytes, so it cannot see chunked uploads under any server).
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/__wsgi__/gc":
        import gc

        body = str(gc.get_freeze_count()).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/__wsgi__/greenlet":
        # How many requests the greenlet (or thread) running this one has run so far.
        from greenlet import getcurrent

        current = getcurrent()
        current.requests_run = getattr(current, "requests_run", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(current.requests_run).encode()]
    if path == "/__wsgi__/refault":
        body = str(refaults()).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path.startswith("/__wsgi__/parse") or path == "*":  # OPTIONS * too
        return parse_application(environ, start_response)
    return django_application(environ, start_response)


# Django answers everything but /__wsgi__/: the server treats this wrapper as the Django app
# it wraps (chunked bodies are read first and given a CONTENT_LENGTH, docs/http.md).
application.__wrapped__ = django_application  # type: ignore[attr-defined]
