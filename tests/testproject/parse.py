"""`/__wsgi__/parse`: a raw WSGI app answering with the server's parse of the request, as JSON.

The HTTP conformance corpus (tests/http/corpus/) compares it with each valid case's expected
method, path, query, headers and body; the same app serves the unit and integration runs.
"""

from __future__ import annotations

import json


def application(environ, start_response):
    body = environ["wsgi.input"].read()  # to its end (chunked too); errors go to the server
    headers = {k: v for k, v in environ.items()
               if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    data = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "raw_uri": environ.get("RAW_URI", ""),
        "protocol": environ["SERVER_PROTOCOL"],
        "scheme": environ["wsgi.url_scheme"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }, sort_keys=True).encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
