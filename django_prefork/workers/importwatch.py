"""--reload: the files of modules a worker imports after it has booted, told to the master.

A generation's zygote lists the project's files before it forks (`workers/reloadfiles.py`),
but some modules are only imported later, in a worker: an ``import`` inside a view, the
template tag libraries Django loads at the first render, a library that imports lazily.
runserver watches them because its reloader lives in the process that serves; here the
master watches, so the worker tells it.

The channel is the worker's heartbeat file, which both ends already hold (private, on
tmpfs, owned by the workers' user): the heartbeat uses its first bytes, and from
REPORT_OFFSET on the worker appends one absolute path per line. The master reads what it
has not read yet whenever it looks for changes, and watches those files too. Nothing here
imports Django at module level: the master is lean.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("django_prefork.error")

#: Where the paths start in the heartbeat file (the heartbeat needs only its first byte).
REPORT_OFFSET = 4096
#: The most bytes of paths one worker reports (a project's whole tree is far less).
REPORT_LIMIT = 4 << 20
_READ_SIZE = 64 * 1024


class ImportReporter:
    """Worker side: remembers which modules were loaded when it was made (the worker has
    booted: its app and URLconf are in) and reports the files of the ones loaded since."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = REPORT_OFFSET
        self._modules = set(sys.modules)
        self._count = len(sys.modules)
        self._full = False

    def report_new(self) -> int:
        """Report the files of modules imported since the last call; how many were new.
        Cheap when nothing was imported (a length compared): it runs between requests."""
        if len(sys.modules) == self._count or self._full:
            return 0
        loaded = dict(sys.modules)  # (a copy: another thread may be importing)
        self._count = len(loaded)
        new = [module for name, module in loaded.items() if name not in self._modules]
        self._modules.update(loaded)
        from django.utils.autoreload import iter_modules_and_files

        paths = sorted(str(path) for path in iter_modules_and_files(tuple(new), frozenset()))
        if not paths:
            return 0
        data = "".join(f"{path}\n" for path in paths if "\n" not in path).encode()
        if self.offset + len(data) > REPORT_OFFSET + REPORT_LIMIT:
            self._full = True
            log.warning("--reload: this worker imported more files than it can report "
                        "(%d bytes of paths); later ones are not watched", REPORT_LIMIT)
            return 0
        # One write of whole lines: the master reads up to the last newline it sees.
        os.pwrite(self.fd, data, self.offset)
        self.offset += len(data)
        return len(paths)


def read_reports(fd: int, offset: int) -> tuple[list[str], int]:
    """Master side: the paths a worker appended after `offset`, and the offset to read from
    next time (a line still being written is left for then)."""
    paths: list[str] = []
    while offset < REPORT_OFFSET + REPORT_LIMIT:
        try:
            data = os.pread(fd, _READ_SIZE, offset)
        except OSError:
            break
        complete, newline, _ = data.rpartition(b"\n")
        if not newline:
            break
        offset += len(complete) + 1
        paths.extend(line.decode("utf-8", "surrogateescape")
                     for line in complete.split(b"\n") if line and b"\0" not in line)
        if len(data) < _READ_SIZE:
            break
    return paths, offset
