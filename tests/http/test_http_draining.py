"""A drain that begins while a response is under way keeps the promise its head made.

`ctx.draining` is read once per response, when the head is built: `Connection: close` or
keep-alive. A drain starting after that (concurrent workers set it from another thread or
greenlet) must not turn a kept-alive response into a closed connection: the client would
send its next request into a reset. The next request is the one told `Connection: close`.
"""

from __future__ import annotations

from httphelpers import exchange, make_ctx

GET = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"


def draining_app(drain_at: str):
    """A streaming app that starts the drain after its first chunk (head already sent) or
    after its last chunk (the whole response sent), on the first request only."""
    state: dict = {"ctx": None, "calls": 0}

    def app(environ, start_response):
        state["calls"] += 1
        first = state["calls"] == 1
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"one "
            if first and drain_at == "mid-body":
                state["ctx"].draining = True
            yield b"two"
            if first and drain_at == "end":
                state["ctx"].draining = True

        return body()

    return app, state


def _run(drain_at: str):
    app, state = draining_app(drain_at)
    ctx = make_ctx(app, keepalive=True)
    state["ctx"] = ctx
    ex = exchange(app, GET % 1 + GET % 2, ctx=ctx)
    return ex, ex.responses()


def test_drain_after_the_head_keeps_the_connection_for_the_next_request():
    ex, (first, second) = _run("mid-body")
    assert ex.errors == []
    assert first.status == 200 and first.body == b"one two"
    assert first.header("Connection") is None  # keep-alive was promised with the head...
    assert first.chunked
    # ...so the connection stays open: the next request is answered, with Connection: close.
    assert ex.results == [True, False]
    assert second.status == 200 and second.body == b"one two"
    assert second.header("Connection") == "close"


def test_drain_after_the_whole_response_keeps_the_connection():
    ex, (first, second) = _run("end")
    assert ex.results == [True, False]
    assert first.header("Connection") is None
    assert second.header("Connection") == "close"


def test_drain_before_the_head_says_connection_close():
    app, _ = draining_app("never")
    ctx = make_ctx(app, keepalive=True)
    ctx.draining = True
    ex = exchange(app, GET % 1 + GET % 2, ctx=ctx)
    (only,) = ex.responses()
    assert only.header("Connection") == "close"
    assert ex.results == [False]  # the pipelined second request is never read
