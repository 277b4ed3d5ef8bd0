"""Waiting for a request head outside the HTTP core: the rules gthread and gevent share.

Both concurrent classes wait for a whole head before the core runs (gthread in its poller,
gevent in the connection's greenlet), so neither an idle keep-alive connection nor a client
dribbling its head (slowloris) holds a thread or a request slot.
"""

from __future__ import annotations

from typing import Any

from django_prefork.http.parser import head_ready as _core_head_ready
from django_prefork.http.proxy import InvalidProxyHeader
from django_prefork.http.proxy import parse as parse_proxy_header

#: Bytes looked at to decide whether a request head is complete. A head that does not fit is
#: handed to the HTTP core, which enforces the real limits.
PEEK_SIZE = 64 * 1024
#: Socket timeout when the `timeout` setting is 0 (a silent client must not pin a thread).
DEFAULT_IO_TIMEOUT = 30.0
#: A partial head whose `header_timeout` ran out goes to the HTTP core with this socket
#: timeout: the core reads what arrived, its next recv times out at once, and it answers 408
#: (or just closes when nothing of a request came, e.g. a lone CRLF).
HANDOVER_TIMEOUT = 0.01


def io_timeout(cfg: Any) -> float:
    """Per-socket timeout while a request is read or written: the `timeout` setting."""
    return float(cfg.timeout) if cfg.timeout else DEFAULT_IO_TIMEOUT


def head_ready(data: bytes, limits: Any, conn: Any = None) -> bool:
    """Whether the HTTP core can take the connection without waiting for more of a head.

    `django_prefork.http.parser.head_ready`: true for a complete head and for bytes the core
    refuses at once (bare LF, too long, ...). Also true once the peek window is full: the core
    reads the rest and enforces the real limits (and `header_timeout`). A connection whose
    PROXY header is still to come (`conn.proxy_pending`) needs that header whole and a head
    after it; a malformed header is ready at once (the core refuses it).
    """
    if len(data) >= PEEK_SIZE:
        return True
    if conn is not None and conn.proxy_pending:
        try:
            found = parse_proxy_header(data, conn.ctx.proxy_protocol)
        except InvalidProxyHeader:
            return True
        if found is None:
            return False
        data = data[found.length:]
    return _core_head_ready(data, limits)


def head_limit(ctx: Any, cfg: Any) -> float:
    """Seconds a client has to send a whole request head: `ctx.header_timeout`.

    Counted from the accept for a new connection (as the HTTP core counts from when it starts
    waiting), from the first byte of the head on a kept-alive one (the wait before it is the
    keep-alive timeout). 0 (no header timeout) falls back to the io timeout.
    """
    return float(getattr(ctx, "header_timeout", 0) or 0) or io_timeout(cfg)
