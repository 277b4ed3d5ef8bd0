"""StatsD: the measurements gunicorn sends, under gunicorn's names, over UDP or a unix socket.

gunicorn documents (docs "Instrumentation"): `gunicorn.requests` (a counter per request),
`gunicorn.request.duration` (a timer, milliseconds), `gunicorn.request.status.<code>`,
`gunicorn.workers` (a gauge from the master) and `gunicorn.log.critical|error|warning|
exception` (counters of log records). `statsd_prefix` is put in front with a dot, and
`dogstatsd_tags` appended as DogStatsD's `|#tags`.

A request's three metrics go out in one datagram, one metric per line (StatsD and DogStatsD
both read multi-metric packets), where gunicorn sends three. The socket is non-blocking and
every error is swallowed: metrics must never slow or fail a request; a lost datagram is what
UDP promises anyway.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from django_prefork.conf import parse_bind


class StatsdClient:
    """A connected, non-blocking datagram socket and the metric lines we send through it."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        family: int
        target: str | tuple[str, int]
        if address.startswith("unix:"):
            family, target = socket.AF_UNIX, address[len("unix:"):]
        else:
            spec = parse_bind(address)
            family, target = spec.family or socket.AF_INET, (spec.host, spec.port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(target)  # resolved once; a unix path must exist already
        except OSError:
            pass  # sends fail quietly until it exists (as gunicorn, which drops them)
        prefix = prefix.strip().rstrip(".")
        self.prefix = f"{prefix}." if prefix else ""
        tags = ",".join(t.strip() for t in tags.split(",") if t.strip())
        self.suffix = f"|#{tags}" if tags else ""
        self._send = self.sock.send
        self._target = target
        p, s = self.prefix, self.suffix
        self._requests_line = f"\n{p}gunicorn.requests:1|c{s}\n{p}gunicorn.request.status."
        self._duration_head = f"{p}gunicorn.request.duration:"
        self._status_tail = f":1|c{s}"
        self._timer_tail = f"|ms{s}"

    @classmethod
    def from_config(cls, cfg: Any) -> StatsdClient | None:
        host = getattr(cfg, "statsd_host", None)
        if not host:
            return None
        return cls(host, getattr(cfg, "statsd_prefix", "") or "",
                   getattr(cfg, "dogstatsd_tags", "") or "")

    def send(self, text: str) -> None:
        try:
            self._send(text.encode("ascii", "replace"))
        except OSError:
            if self.sock.family == socket.AF_UNIX:
                self._reconnect()

    def _reconnect(self) -> None:
        try:
            self.sock.connect(self._target)
        except OSError:
            pass

    def request(self, status: str, seconds: float) -> None:
        """A request's duration, count and status code, in one datagram."""
        code = status[:3]
        self.send(f"{self._duration_head}{seconds * 1000:.3f}{self._timer_tail}"
                  f"{self._requests_line}{code}{self._status_tail}")

    def gauge(self, name: str, value: int) -> None:
        self.send(f"{self.prefix}{name}:{value}|g{self.suffix}")

    def histogram(self, name: str, value: int) -> None:
        self.send(f"{self.prefix}{name}:{value}|h{self.suffix}")

    def increment(self, name: str, value: int = 1) -> None:
        self.send(f"{self.prefix}{name}:{value}|c{self.suffix}")

    def close(self) -> None:
        self.sock.close()


class StatsdLogCounter(logging.Filter):
    """Counts warning and worse records of the error log as gunicorn.log.<level>.

    As gunicorn: a record logged with an exception (`log.exception`) counts as
    `gunicorn.log.exception`, not as an error. A filter on the logger, not a handler: it
    lets every record through, and the logging setup (django_prefork.logging) reads any
    handler it did not attach as the project's own routing of the error log.
    """

    def __init__(self, client: StatsdClient) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        level = record.levelno
        if level >= logging.WARNING:
            if level >= logging.CRITICAL:
                name = "critical"
            elif level >= logging.ERROR:
                name = "exception" if record.exc_info else "error"
            else:
                name = "warning"
            self.client.increment(f"gunicorn.log.{name}")
        return True


def count_log_records(client: StatsdClient | None) -> None:
    """Count the error log's records with `client` (the one counter of this process)."""
    error_log = logging.getLogger("django_prefork.error")
    for old in list(error_log.filters):
        if isinstance(old, StatsdLogCounter):
            error_log.removeFilter(old)
    if client is not None:
        error_log.addFilter(StatsdLogCounter(client))
