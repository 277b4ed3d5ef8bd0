"""wsgi.input: the request body, streamed from the socket as the application reads it.

A reader never reads past the end of its message, so pipelined requests stay in the
connection's buffer. The source is the connection: `recv_body(n)` returns up to `n` bytes
(its buffer first, else one `recv`; b"" at EOF; sends `100 Continue` on first use when the
client asked for it) and `unread(data)` gives back bytes of the next message.
"""

from __future__ import annotations

import gc
import tempfile
from typing import IO, Protocol

from .errors import IncompleteBody, InvalidBody
from .parser import ChunkedDecoder, Limits

#: Read size when the application asks for "everything" or a line.
READ_CHUNK = 64 * 1024


#: A Content-Length body read in one call of at least this size is received into a reused
#: buffer and copied out once (LengthReader.read_exact), up to EXACT_MAX bytes.
EXACT_MIN = 128 * 1024
EXACT_MAX = 4 * 1024 * 1024


class Source(Protocol):
    def recv_body(self, n: int) -> bytes: ...

    def recv_body_exact(self, n: int) -> bytes: ...

    def unread(self, data: bytes) -> None: ...


#: Request body bytes read by the application between two runs of the cyclic GC.
BODY_GC_BUDGET = 4 * 1024 * 1024


class BodyCollector:
    """Frees the request bodies the application has finished with: runs the cyclic GC once
    BODY_GC_BUDGET bytes of bodies have been read since its last run.

    Django's request objects are reference cycles, so a body read into `request.body` is
    freed only when the GC next collects, which its allocation counts decide: some dozens
    of requests later. Sync worker, 1 MB uploads: 40 MB of heap per worker held that way,
    whole-tree PSS above gunicorn's. A collection costs ~50 µs here (the zygote's objects
    are frozen out of its reach); one per 4 MB of bodies is ~1% of a 1 MB upload.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = 0

    def add(self, received: int) -> None:
        pending = self._pending + received
        if pending < BODY_GC_BUDGET:
            self._pending = pending
            return
        self._pending = 0
        gc.collect()


class LengthReader:
    """A Content-Length body: exactly `remaining` more bytes (RFC 9112 §6.2)."""

    __slots__ = ("_source", "failed", "remaining")

    def __init__(self, source: Source, length: int) -> None:
        self._source = source
        self.remaining = length
        self.failed = False  # an error was raised: the connection cannot be reused

    @property
    def done(self) -> bool:
        """The whole body was received."""
        return self.remaining == 0

    def read_some(self, size: int) -> bytes:
        """Up to `size` bytes (at least one unless the body is finished)."""
        remaining = self.remaining
        if not remaining:
            return b""
        try:
            data = self._source.recv_body(size if size < remaining else remaining)
        except OSError:
            self.failed = True
            raise
        if not data:
            self.failed = True
            raise IncompleteBody(f"client closed with {remaining} body bytes missing")
        self.remaining = remaining - len(data)
        return data

    def read_exact(self, size: int) -> bytes:
        """`size` bytes (at most what remains) in one piece, for large reads.

        Reading in pieces and joining them made three big allocations per 1 MB upload, which
        glibc gives back to the system after every request and faults in again on the next:
        ~250 page faults per request, sync upload row 1,280 req/s. One reused receive buffer
        and one copy: see docs/benchmarks.md.
        """
        size = min(size, self.remaining)
        try:
            data = self._source.recv_body_exact(size)
        except OSError:
            self.failed = True
            raise
        self.remaining -= len(data)
        if len(data) < size:
            self.failed = True
            raise IncompleteBody(f"client closed with {self.remaining} body bytes missing")
        return data

    def drain(self, budget: int) -> bool:
        """Discard the rest if at most `budget` bytes; True when the body is finished."""
        if self.remaining > budget:
            return False
        while self.remaining:
            self.read_some(self.remaining)
        return True


class ChunkedReader:
    """A chunked body, decoded by a strict, bounded `ChunkedDecoder` (RFC 9112 §7.1)."""

    __slots__ = ("_decoded", "_decoder", "_pending", "_source", "failed")

    def __init__(self, source: Source, limits: Limits) -> None:
        self._source = source
        self._decoder = ChunkedDecoder(limits)
        self._decoded: list[bytes] = []
        self._pending = b""
        self.failed = False  # an error was raised: the connection cannot be reused

    @property
    def done(self) -> bool:
        """The whole message was received (decoded leftovers need no more reading)."""
        return self._decoder.done

    def _feed(self, data: bytes) -> None:
        try:
            used = self._decoder.feed(data, self._decoded)
        except InvalidBody:
            self.failed = True
            raise
        if used < len(data):
            self._source.unread(data[used:])

    def prefeed(self, data: bytes) -> None:
        """Decode body bytes that arrived with the head, so a bad chunk is a 400 up front."""
        self._feed(data)

    def read_some(self, size: int) -> bytes:
        """Up to `size` decoded bytes (at least one unless the body is finished)."""
        pending = self._pending
        while not pending:
            chunks = self._decoded
            if chunks:
                pending = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                break
            if self._decoder.done:
                return b""
            try:
                data = self._source.recv_body(READ_CHUNK)
            except OSError:
                self.failed = True
                raise
            if not data:
                self.failed = True
                raise IncompleteBody("client closed inside a chunked body")
            self._feed(data)
        if len(pending) > size:
            self._pending = pending[size:]
            return pending[:size]
        self._pending = b""
        return pending

    def drain(self, budget: int) -> bool:
        """Discard up to `budget` decoded bytes; True when the body is finished."""
        self._pending = b""
        self._decoded.clear()
        while budget > 0:
            data = self.read_some(budget)
            if not data:
                return True
            budget -= len(data)
        return self.done


#: A chunked body read whole before the application runs (`spool_chunked`) stays in memory
#: up to this size; a larger one goes to a temporary file (in `tempfile.gettempdir()`), so a
#: worker's memory does not grow with the upload.
SPOOL_MEMORY_MAX = 1 << 20


class SpooledReader:
    """A chunked body already received whole, read back from memory or a temporary file.

    For applications that read `CONTENT_LENGTH` bytes and nothing else (Django): the server
    decodes the body first and tells them its length (docs/http.md, "Chunked uploads").
    """

    __slots__ = ("_file", "failed", "length", "remaining")

    def __init__(self, file: IO[bytes], length: int) -> None:
        self._file = file
        self.length = length
        self.remaining = length
        self.failed = False

    @property
    def done(self) -> bool:
        """Always: nothing of this message is left on the socket."""
        return True

    def read_some(self, size: int) -> bytes:
        """Up to `size` bytes (at least one unless the body is finished)."""
        if size > self.remaining:
            size = self.remaining
        if size <= 0:
            return b""
        data = self._file.read(size)
        self.remaining -= len(data)
        return data

    def drain(self, budget: int) -> bool:
        """Nothing to discard from the socket."""
        return True

    def close(self) -> None:
        """Free the memory or delete the temporary file."""
        self._file.close()


def spool_chunked(reader: ChunkedReader, memory_max: int = SPOOL_MEMORY_MAX) -> SpooledReader:
    """Decode a whole chunked body from `reader` into memory, or a temporary file past
    `memory_max` bytes. The decoder's limit (`limit_request_body`, 413) bounds the total;
    errors propagate as the reader raises them (InvalidBody, BodyTooLarge, OSError)."""
    file = tempfile.SpooledTemporaryFile(max_size=memory_max)  # noqa: SIM115 (closed by the reader)
    try:
        total = 0
        while data := reader.read_some(READ_CHUNK):
            file.write(data)
            total += len(data)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return SpooledReader(file, total)


class Body:
    """The `wsgi.input` stream (PEP 3333): read, readline, readlines, iteration."""

    __slots__ = ("_buf", "_reader")

    def __init__(self, reader: LengthReader | ChunkedReader | SpooledReader | None) -> None:
        self._reader = reader
        self._buf = b""  # read ahead by readline

    def read(self, size: int | None = -1) -> bytes:
        """`size` bytes, fewer only at the end of the body; all of it when size < 0."""
        reader = self._reader
        buf = self._buf
        if size is None or size < 0:
            if not buf and _exact(reader):
                return reader.read_exact(reader.remaining)  # type: ignore[union-attr]
            parts = [buf] if buf else []
            self._buf = b""
            if reader is not None:
                while data := reader.read_some(READ_CHUNK):
                    parts.append(data)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if buf:
            if len(buf) >= size:
                self._buf = buf[size:]
                return buf[:size]
            self._buf = b""
        if reader is None:
            return buf
        have = len(buf)
        if not have and size >= EXACT_MIN and _exact(reader):
            return reader.read_exact(size)  # type: ignore[union-attr]
        if not have:
            data = reader.read_some(size)
            have = len(data)
            if have == size or not data:
                return data
            parts = [data]
        else:
            parts = [buf]
        while have < size:
            data = reader.read_some(size - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """One line including its b"\\n", at most `size` bytes when size >= 0."""
        if size is None:
            size = -1
        buf = self._buf
        scanned = 0
        while True:
            nl = buf.find(b"\n", scanned)
            if nl >= 0 and (size < 0 or nl < size):
                self._buf = buf[nl + 1 :]
                return buf[: nl + 1]
            if 0 <= size <= len(buf):
                self._buf = buf[size:]
                return buf[:size]
            data = self._reader.read_some(READ_CHUNK) if self._reader is not None else b""
            if not data:
                self._buf = b""
                return buf
            scanned = len(buf)
            buf = buf + data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Lines until the end of the body, or until `hint` bytes have been read."""
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Body:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""


def _exact(reader: LengthReader | ChunkedReader | SpooledReader | None) -> bool:
    """Whether a large read from `reader` goes through read_exact (a length body with
    EXACT_MIN to EXACT_MAX bytes left)."""
    return type(reader) is LengthReader and EXACT_MIN <= reader.remaining <= EXACT_MAX
