"""The 10 MB file of the `wsgi.file_wrapper` row, made once and shared by every process.

Its path comes from BENCH_FILE (set by bench/run.py) so the servers, the in-process reference
and the harness agree without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_SIZE = 10 * 1024 * 1024


def file_path() -> Path:
    """Where the 10 MB file lives (BENCH_FILE, else a fixed name in the temp directory)."""
    default = Path(tempfile.gettempdir()) / "django-prefork-bench-10m.bin"
    return Path(os.environ.get("BENCH_FILE") or default)


def ensure_file() -> Path:
    """Create the file if it is missing or of the wrong size; atomic, so readers never see half.

    The content is incompressible-looking but cheap to make: a repeated 64 KiB random block.
    """
    path = file_path()
    if path.exists() and path.stat().st_size == FILE_SIZE:
        return path
    block = os.urandom(64 * 1024)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        for _ in range(FILE_SIZE // len(block)):
            f.write(block)
    os.replace(tmp, path)
    return path
