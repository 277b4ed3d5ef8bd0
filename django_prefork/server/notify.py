"""sd_notify(3): tell systemd (or anything listening on NOTIFY_SOCKET) how the master is doing.

A `Type=notify` (or `notify-reload`) unit waits for `READY=1` before it counts the service as
started, and after `RELOADING=1` until the next `READY=1`. The protocol is one datagram of
newline-separated `KEY=VALUE` lines to the AF_UNIX socket named by NOTIFY_SOCKET: a path, or
an abstract name written with a leading "@". Without NOTIFY_SOCKET every call is a no-op, and
no call ever raises: a notification that cannot be sent is logged, never fatal.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("django_prefork.error")

ENV_VAR = "NOTIFY_SOCKET"


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. systemd's "vsock:" addresses, which this module does not speak


class Notifier:
    """The master's side of the protocol, with the states it goes through."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        value = (os.environ if environ is None else environ).get(ENV_VAR, "")
        self.address = _address(value) if value else None
        if value and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or an @abstract name: systemd will "
                        "not be notified", value)
        self.ready_sent = False  # READY=1 of the first generation has gone out
        self.reloading = False  # RELOADING=1 sent, READY=1 not yet
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of KEY=VALUE fields; False (and one log line) if it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:  # once: a gone notify socket would otherwise log every tick
                log.warning("Could not notify %s: %s", os.environ.get(ENV_VAR), exc)
                self._warned = True
            return False
        return True

    # -- the master's life cycle -----------------------------------------------------------
    def serving(self, status: str) -> None:
        """The current generation serves: READY=1 on first boot and after a reload."""
        if not self.ready_sent:
            self.ready_sent = True
            self.send("READY=1", f"MAINPID={os.getpid()}", f"STATUS={status}")
        elif self.reloading:
            self.reloading = False
            self.send("READY=1", f"STATUS={status}")

    def reload_started(self) -> None:
        """HUP: systemd's notify-reload protocol wants CLOCK_MONOTONIC in microseconds."""
        if self.reloading:
            return  # a second HUP during a reload: one READY=1 will end both
        self.reloading = True
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping")
