"""A small keep-alive HTTP/1.1 load generator: the fallback when wrk is not installed.

asyncio, one coroutine per client connection, closed-loop (a client sends its next request
when the previous response is complete), like wrk. It uses far more CPU per request than wrk
and shares the machine's cores with the server, so its req/s are lower in absolute terms;
the runprefork/gunicorn ratio is still measured under the same load. Loopback only.

    python bench/loadgen.py --url http://127.0.0.1:8000/hello --clients 50 --duration 3

Prints one JSON line in the shape bench/run.py reads from its wrk script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


class Stats:
    """Counters shared by every client coroutine (one event loop: no locking needed)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bytes = 0
        self.connect = 0
        self.read = 0
        self.write = 0
        self.status = 0
        self.timeout = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, int]:
    """Read one response; (status code, server wants close, bytes read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and "close" in value:
            close = True
    size = len(head)
    if chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.split(b";")[0], 16)
            await reader.readexactly(n + 2)
            size += len(line) + n + 2
            if n == 0:
                break
    elif length is not None:
        remaining = length
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("EOF in body")
            remaining -= len(chunk)
        size += length
    elif code >= 200 and code not in (204, 304):
        while chunk := await reader.read(1 << 20):  # close-delimited
            size += len(chunk)
        close = True
    return code, close, size


async def client(host: str, port: int, request: bytes, close_each: bool, deadline: float,
                 timeout: float, stats: Stats) -> None:
    """One closed-loop client: reconnects whenever the server (or we) closed."""
    reader = writer = None
    while time.monotonic() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout)
            except (OSError, asyncio.TimeoutError):
                stats.connect += 1
                await asyncio.sleep(0.01)
                continue
        assert reader is not None
        start = time.perf_counter()
        try:
            writer.write(request)
            await writer.drain()
        except OSError:
            stats.write += 1
            writer.close()
            writer = None
            continue
        try:
            code, close, size = await asyncio.wait_for(read_response(reader), timeout)
        except asyncio.TimeoutError:
            stats.timeout += 1
            close = True
        except (OSError, ValueError, asyncio.IncompleteReadError):
            stats.read += 1
            close = True
        else:
            stats.latencies.append(time.perf_counter() - start)
            stats.bytes += size
            if code >= 400:
                stats.status += 1
        if close or close_each:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen sends traffic to the loopback interface only")
    body = b"x" * args.body_size
    head = [f"{args.method} {url.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    if body:
        head += [f"Content-Length: {len(body)}", "Content-Type: application/octet-stream"]
    if args.close:
        head.append("Connection: close")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    stats = Stats()
    start = time.monotonic()
    deadline = start + args.duration
    await asyncio.gather(*(client(host, port, request, args.close, deadline, args.timeout,
                                  stats) for _ in range(args.clients)))
    elapsed = time.monotonic() - start
    lat = sorted(stats.latencies)
    return {
        "requests": len(lat), "duration_us": int(elapsed * 1e6), "bytes": stats.bytes,
        "connect": stats.connect, "read": stats.read, "write": stats.write,
        "status": stats.status, "timeout": stats.timeout,
        "p50": int(percentile(lat, 50) * 1e6), "p90": int(percentile(lat, 90) * 1e6),
        "p99": int(percentile(lat, 99) * 1e6), "max": int((lat[-1] if lat else 0) * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-size", type=int, default=0)
    parser.add_argument("--close", action="store_true", help="send Connection: close")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    print("BENCHJSON " + json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
