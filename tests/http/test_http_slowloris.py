"""Slowloris against the sync worker, which serves one connection at a time.

Four clients trickle a head (a header line every 0.5 s) into one sync worker with the
default header_timeout (30 s). Without a minimum rate each holds the worker for 30 s and a
normal client waits about two minutes; with it, each is cut off (408) after about
HEAD_GRACE, and the normal client is served in seconds (measured: 2.0 s; docs/security.md).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from server import Server

pytestmark = pytest.mark.integration

SLOW_CLIENTS = 4
#: Far below 4 x header_timeout (120 s), generous for a loaded machine.
VICTIM_DEADLINE = 20.0


def test_four_slowloris_clients_do_not_hold_a_sync_worker():
    with Server("--workers", "1", "--worker-class", "sync") as server:
        server.start()
        slow = []
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection((server.host, server.port), timeout=60)
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.5):
                for sock in slow:
                    try:
                        sock.sendall(b"X-a: b\r\n")
                    except OSError:
                        pass

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            started = time.monotonic()
            with socket.create_connection((server.host, server.port),
                                          timeout=VICTIM_DEADLINE) as victim:
                victim.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = victim.recv(100)  # TimeoutError past the deadline: the test fails
            waited = time.monotonic() - started
            assert reply.startswith(b"HTTP/1.1 200 "), reply
            assert waited < VICTIM_DEADLINE
            for sock in slow:  # each was answered 408 and closed
                sock.settimeout(VICTIM_DEADLINE)
                data = b""
                try:
                    while chunk := sock.recv(65536):
                        data += chunk
                except ConnectionResetError:
                    pass  # a trickled line met the closed socket after the 408
                assert data.startswith(b"HTTP/1.1 408 "), data[:100]
        finally:
            stop.set()
            trickler.join(5)
            for sock in slow:
                sock.close()
