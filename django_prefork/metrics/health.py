"""`/-/live` and `/-/ready` on the main bind, answered by a worker before the application
(setting health_on_main_bind), for probes that can only reach the serving port.

The worker is alive if it answers; it is ready while the master has not begun a graceful
stop, a WINCH or an upgrade hand-over (a word on the metrics board the master clears:
board.py, READY). Not counted as requests, and never passed to Django.
"""

from __future__ import annotations

from typing import Any

from .board import MetricsBoard

LIVE = "/-/live"
READY = "/-/ready"


def _answer(status: str, body: bytes, head_only: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}"
            "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


class MainBindHealth:
    """`check(method, target)`: the whole response for a health path, else None."""

    def __init__(self, board: MetricsBoard) -> None:
        self.board = board

    def check(self, method: str, target: str) -> bytes | None:
        path = target.split("?", 1)[0]
        if path != LIVE and path != READY:
            return None
        if method not in ("GET", "HEAD"):
            return _answer("405 Method Not Allowed", b"only GET and HEAD\n", False)
        head_only = method == "HEAD"
        if path == LIVE:
            return _answer("200 OK", b"live\n", head_only)
        if self.board.ready():
            return _answer("200 OK", b"ready\n", head_only)
        return _answer("503 Service Unavailable", b"not ready\n", head_only)


def make_health_check(cfg: Any, board_fd: int | None) -> Any:
    """The `check` a worker's HTTP core should call, or None when the setting is off."""
    if not getattr(cfg, "health_on_main_bind", False) or board_fd is None:
        return None
    board = MetricsBoard.attach(board_fd)
    return MainBindHealth(board).check if board is not None else None
