"""Slow HTTP clients: each one holds a connection for seconds per request, as a client on a
bad mobile link does when nothing buffers in front of the server.

    python bench/slowclients.py --url http://127.0.0.1:8000/hello --mode send --clients 16 \
        --duration 5 --seconds 2
    python bench/slowclients.py --url http://127.0.0.1:8000/big --mode read --clients 16 \
        --duration 5 --seconds 2

`--mode send` trickles each request's bytes over `--seconds` (a slow upload of the head);
`--mode read` sends the request at once and reads the response in small pieces over about
`--seconds`, with a small receive buffer, so the server's send waits on the client (only a
response larger than the kernel's socket buffers makes the server wait: use /big or more).
Each client makes one request per connection (`Connection: close`) and starts again until
`--duration` ends. bench/scaling.py runs this beside the measured load. Loopback only,
bounded in clients and time.

Prints one JSON line: BENCHJSON {"completed": n, "errors": n, "mean_s": seconds per request}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

MAX_CLIENTS = 500
MAX_DURATION = 600.0
#: Pieces a slow request's head is sent in, or a slow response is read in per second.
SEND_PIECES = 20
READ_PIECE = 1024
#: The client's receive buffer in slow-read mode: small, so the window closes quickly.
READ_BUFFER = 4096


class Tally:
    """What every client did (one event loop: no locking needed)."""

    def __init__(self) -> None:
        self.completed = 0
        self.errors = 0
        self.seconds = 0.0


async def connect(host: str, port: int, small_buffer: bool) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffer:  # before connect(): the window offered in the handshake is small too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BUFFER)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock, limit=READ_BUFFER)


async def one_request(host: str, port: int, path: str, mode: str, seconds: float) -> None:
    """One slow request on a new connection, to the end of the response."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: slowclients\r\n"
               "Connection: close\r\n\r\n").encode()
    reader, writer = await connect(host, port, small_buffer=mode == "read")
    try:
        if mode == "send":
            piece = max(1, len(request) // SEND_PIECES + 1)
            for start in range(0, len(request), piece):
                writer.write(request[start:start + piece])
                await writer.drain()
                await asyncio.sleep(seconds / SEND_PIECES)
            head = await reader.readuntil(b"\r\n\r\n")
            while await reader.read(1 << 16):
                pass
        else:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            # Pace the reads so that a 100 KB body takes about `seconds`.
            pause = seconds / (100 * 1024 / READ_PIECE)
            while await reader.read(READ_PIECE):
                await asyncio.sleep(pause)
        status = int(head.split(b" ", 2)[1])
        if status >= 400:
            raise ConnectionError(f"status {status}")
    finally:
        writer.close()


async def client(host: str, port: int, path: str, mode: str, seconds: float,
                 deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            await asyncio.wait_for(one_request(host, port, path, mode, seconds),
                                   timeout=max(30.0, seconds * 10))
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            tally.errors += 1
            await asyncio.sleep(0.1)
        else:
            tally.completed += 1
            tally.seconds += time.monotonic() - start


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("slowclients sends traffic to 127.0.0.1 only")
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION:
        raise SystemExit(f"--clients 1..{MAX_CLIENTS} and --duration up to {MAX_DURATION:g} s")
    tally = Tally()
    deadline = time.monotonic() + args.duration
    await asyncio.gather(*(client("127.0.0.1", port, url.path or "/", args.mode,
                                  args.seconds, deadline, tally)
                           for _ in range(args.clients)))
    return {"completed": tally.completed, "errors": tally.errors,
            "mean_s": tally.seconds / tally.completed if tally.completed else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("send", "read"), required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="how long one request's sending or reading takes (default 2)")
    args = parser.parse_args()
    print("BENCHJSON " + json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
