"""Dev reload (``--reload``): the master watches the files a generation runs, and reloads on
a change exactly as a HUP does.

Why in the master: the lean master never imports the project, but a HUP already boots a new
generation whose interpreter re-reads the settings and code, and rolls back (the old workers
serve on, one log line) when that code fails to import. So a watcher only has to know *which*
files to watch: each generation's zygote lists them (`workers/reloadfiles.py`, with Django's
own autoreloader machinery) and sends the list on its control socket; the master watches the
union of every list it was sent, so a failed attempt's files (the one with the SyntaxError
included) stay watched, and the next save tries again. Each change is seen once (the
snapshot moves on), so a failing generation cannot cause a reload loop.

Two engines, one interface (`fds()` for the loop's select, `timeout()` for its tick,
`changed()` which never blocks):
- poll: stat every watched file each `POLL_INTERVAL`;
- inotify: Linux inotify through ctypes on libc (no dependency), on the files' directories
  (so an editor that saves by renaming a new file over the old one is seen too).
Nothing here imports Django.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import glob
import logging
import os
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("django_prefork.error")

#: Seconds between two scans of the poll engine: with a zygote booting in about a second,
#: a save is served well within 2 s.
POLL_INTERVAL = 0.5
#: An editor's save is a burst of events (inotify) or of stamps (poll: a file truncated, then
#: written); act once it has settled this long.
SETTLE = 0.1
#: poll: a file that keeps changing is reported after this long all the same.
SETTLE_MAX = 1.0

_GLOB_MAGIC = frozenset("*?[")


def is_glob(entry: str) -> bool:
    """Whether an extra-file entry is a pattern (gunicorn reads ``*``, ``?``, ``[`` so)."""
    return any(char in _GLOB_MAGIC for char in entry)


def _is_scratch(path: str) -> bool:
    """Editors' swap and backup files next to a watched one: never a reason to reload."""
    name = os.path.basename(path)
    return name.startswith(".") or name.endswith(("~", ".swp", ".swx")) or name == "4913"


@dataclass(frozen=True)
class WatchList:
    """What one generation asks the master to watch: files, and glob patterns re-expanded on
    every scan (template directories as ``DIR/**/*``, the extra-file patterns)."""

    files: frozenset[str]
    globs: frozenset[str]

    def to_json(self) -> dict[str, list[str]]:
        return {"files": sorted(self.files), "globs": sorted(self.globs)}

    @classmethod
    def from_json(cls, data: Any) -> WatchList:
        if not isinstance(data, dict):
            raise ValueError("a watch list must be a JSON object")
        files = [str(f) for f in data.get("files", []) if isinstance(f, str)]
        globs = [str(g) for g in data.get("globs", []) if isinstance(g, str)]
        return cls(frozenset(files), frozenset(globs))


def expand(globs: Iterable[str]) -> set[str]:
    """The files the patterns match now (glob's rules: ``*`` skips dotfiles, ``**``
    recurses)."""
    found: set[str] = set()
    for pattern in globs:
        for path in glob.iglob(pattern, recursive=True):
            if not _is_scratch(path) and os.path.isfile(path):
                found.add(path)
    return found


def matches(path: str, pattern: str) -> bool:
    """Whether path is one the pattern names, for an event on a path that may be new.

    fnmatch's ``*`` also crosses ``/``; a leading ``**/`` may match no directory at all."""
    if _is_scratch(path):
        return False
    return fnmatch.fnmatchcase(path, pattern) or (
        "**/" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", "", 1)))


class Engine(Protocol):
    name: str
    files: set[str]

    def watch(self, files: set[str], globs: set[str]) -> None: ...
    def fds(self) -> list[int]: ...
    def timeout(self) -> float | None: ...
    def changed(self) -> str | None: ...
    def close(self) -> None: ...


_Stamp = tuple[int, int] | None  # (mtime_ns, size), None for a missing file


def _stamp(path: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class PollEngine:
    """stat() every watched file every POLL_INTERVAL; a file whose stamp moved changed.

    As in gunicorn, a file that appears (a new match of a pattern, a file recreated) is
    recorded when a scan first sees it, and its next edit triggers; a file that disappears is
    not a change. A change is reported once a scan SETTLE later finds nothing moved: a save
    caught between its truncation and its write would otherwise reload an empty module, then
    reload again (a SyntaxError or an ImportError logged for a save that had none)."""

    name = "poll"

    def __init__(self, interval: float = POLL_INTERVAL) -> None:
        self.interval = interval
        self.files: set[str] = set()
        self.globs: set[str] = set()
        self.stamps: dict[str, _Stamp] = {}
        self._next_scan = time.monotonic() + interval
        self._settling: str | None = None  # the changed file, waiting for the writes to end
        self._settling_since = 0.0

    def watch(self, files: set[str], globs: set[str]) -> None:
        new_globs = globs - self.globs
        self.globs |= globs
        for path in (files - self.files) | expand(new_globs):
            self.stamps.setdefault(path, _stamp(path))
        self.files |= files

    def fds(self) -> list[int]:
        return []

    def timeout(self) -> float | None:
        return max(0.0, self._next_scan - time.monotonic())

    def changed(self) -> str | None:
        now = time.monotonic()
        if now < self._next_scan:
            return None
        moved = self.scan()
        if self._settling is None:
            if moved is None:
                self._next_scan = now + self.interval
                return None
            self._settling, self._settling_since = moved, now
        elif moved is None or now - self._settling_since >= SETTLE_MAX:
            path, self._settling = self._settling, None
            self._next_scan = now + self.interval
            return path
        self._next_scan = now + SETTLE  # look again once the writes may have ended
        return None

    def scan(self) -> str | None:
        """One pass over every file; the first that changed (all stamps move on)."""
        first: str | None = None
        paths = self.files | expand(self.globs) if self.globs else self.files
        for path in paths:
            stamp = _stamp(path)
            old = self.stamps.get(path)
            if stamp != old:
                self.stamps[path] = stamp
                if first is None and old is not None and stamp is not None:
                    first = path
        return first

    def close(self) -> None:
        pass


# <sys/inotify.h>
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
_WATCH_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB | IN_CREATE | IN_ONLYDIR


class InotifyUnavailable(Exception):
    """inotify cannot be set up here; str() says why."""


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        raise InotifyUnavailable("inotify exists only on Linux")
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc, as prctl is found
        init = libc.inotify_init1
        add = libc.inotify_add_watch
    except (OSError, AttributeError) as exc:
        raise InotifyUnavailable(f"the C library has no inotify ({exc})") from None
    init.argtypes = [ctypes.c_int]
    init.restype = ctypes.c_int
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add.restype = ctypes.c_int
    return libc


def inotify_problem() -> str | None:
    """Why inotify cannot be used here, or None (opens and closes one instance)."""
    try:
        engine = InotifyEngine()
    except InotifyUnavailable as exc:
        return str(exc)
    engine.close()
    return None


class InotifyEngine:
    """Watch the directories of the watched files; an event naming a watched file (or a
    path a pattern matches) is a change, acted on once the burst has settled."""

    name = "inotify"

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise InotifyUnavailable(f"inotify_init1 failed: {os.strerror(code)}")
        self.fd: int = fd
        self.files: set[str] = set()
        self.globs: set[str] = set()
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._watched: set[str] = set()
        self._pending: str | None = None
        self._last_event = 0.0
        self._warned = False

    def watch(self, files: set[str], globs: set[str]) -> None:
        self.files |= files
        self.globs |= globs
        self._watch_dirs({os.path.dirname(path) for path in files} | self._glob_dirs(globs))

    def _glob_dirs(self, globs: Iterable[str]) -> set[str]:
        """Every directory where a file a pattern names could appear: its fixed prefix, each
        subdirectory below it for ``**``, the directories of its current matches."""
        dirs: set[str] = set()
        for pattern in globs:
            parts = pattern.split(os.sep)
            fixed = next((i for i, part in enumerate(parts) if is_glob(part)), len(parts) - 1)
            base = os.sep.join(parts[:fixed]) or os.sep
            dirs.add(base)
            if "**" in pattern:
                for root, subdirs, _ in os.walk(base):
                    subdirs[:] = [d for d in subdirs if not d.startswith(".")
                                  and d != "__pycache__"]
                    dirs.add(root)
            else:
                dirs.update(os.path.dirname(path) for path in expand([pattern]))
        return dirs

    def _watch_dirs(self, dirs: set[str]) -> None:
        for directory in sorted(dirs - self._watched):
            wd = self._lib.inotify_add_watch(self.fd, os.fsencode(directory), _WATCH_MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code == errno.ENOSPC and not self._warned:
                    self._warned = True
                    log.warning("--reload: cannot watch %s: the inotify watch limit is reached."
                                " Raise fs.inotify.max_user_watches, or use --reload-engine "
                                "poll", directory)
                continue  # a directory that has gone: nothing in it to watch
            self._dirs[wd] = directory
            self._watched.add(directory)

    def fds(self) -> list[int]:
        return [self.fd]

    def timeout(self) -> float | None:
        if self._pending is None:
            return None
        return max(0.0, self._last_event + SETTLE - time.monotonic())

    def changed(self) -> str | None:
        self._read_events()
        if self._pending is None or time.monotonic() - self._last_event < SETTLE:
            return None
        path, self._pending = self._pending, None
        return path

    def _read_events(self) -> None:
        new_dirs: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self._note("(inotify queue overflow: events were lost)")
                    continue
                directory = self._dirs.get(wd)
                if directory is None:
                    continue
                path = os.path.join(directory, os.fsdecode(raw.rstrip(b"\0")))
                if mask & IN_ISDIR:
                    if mask & IN_CREATE:
                        new_dirs.add(path)
                    continue
                if mask & IN_CREATE:
                    continue  # a new file: its write that follows is the change
                if path in self.files or any(matches(path, p) for p in self.globs):
                    self._note(path)
        if new_dirs:
            # A new directory, perhaps under a recursive pattern: watch what it adds.
            self._watch_dirs(self._glob_dirs(self.globs))

    def _note(self, path: str) -> None:
        if self._pending is None:
            self._pending = path
        self._last_event = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def make_engine(name: str) -> Engine:
    """The engine the setting names; ``auto`` is inotify where it can be set up, else poll."""
    if name == "poll":
        return PollEngine()
    try:
        return InotifyEngine()
    except InotifyUnavailable as exc:
        if name == "inotify":
            raise
        log.info("--reload: inotify is not available (%s): polling every %.1f s",
                 exc, POLL_INTERVAL)
        return PollEngine()


class DevReloader:
    """The master's watcher: the union of the watch lists generations report."""

    def __init__(self, engine_name: str) -> None:
        self.engine = make_engine(engine_name)
        self.globs: set[str] = set()

    def adopt(self, watch_list: WatchList) -> None:
        before = len(self.engine.files)
        self.engine.watch(set(watch_list.files), set(watch_list.globs))
        self.globs |= watch_list.globs
        if len(self.engine.files) != before:
            # Said once at start (the operator learns it works, and how); later at debug.
            level = logging.INFO if not before else logging.DEBUG
            log.log(level, "Watching %s files and %s patterns for changes (--reload, %s)",
                    len(self.engine.files), len(self.globs), self.engine.name)

    def fds(self) -> list[int]:
        return self.engine.fds()

    def timeout(self) -> float | None:
        return self.engine.timeout()

    def changed(self) -> str | None:
        return self.engine.changed()

    def close(self) -> None:
        self.engine.close()


def config_problems(cfg: Any) -> list[str]:
    """What makes --reload impossible with these settings: one line each, with the fix."""
    if not cfg.reload:
        return []
    problems: list[str] = []
    if cfg.preload_app:
        problems.append(
            "--reload (RELOAD) cannot be used with --preload (PRELOAD_APP): a preloaded app "
            "lives in the master, which never imports changed code. Fix: drop --preload while "
            "developing (or --reload in production).")
    if cfg.reload_engine == "inotify":
        why = inotify_problem()
        if why:
            problems.append(f"--reload-engine inotify (RELOAD_ENGINE) cannot be set up: {why}. "
                            "Fix: use --reload-engine poll, or auto to fall back to it.")
    for entry in cfg.reload_extra_files:
        if not is_glob(entry) and not os.path.isfile(entry):
            problems.append(
                f"--reload-extra-file (RELOAD_EXTRA_FILES) {entry!r} is not an existing file "
                f"(relative paths start at {os.getcwd()}). Fix: name an existing file, or a "
                "glob pattern such as 'config/*.yaml'.")
    return problems
