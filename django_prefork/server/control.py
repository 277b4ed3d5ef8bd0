"""The master's control socket: `preforkctl` commands over a unix socket.

A tiny line protocol: the client sends one JSON object and a newline (`{"command":
"status"}`), the master answers with one JSON object and a newline, then closes. Actions
queue the same signal number the master's signal handler would (`reload` = HUP,
`add-worker` = TTIN, ...), so they behave exactly like the signals; `status` reads the
arbiter's worker records and the metrics board.

The master never blocks here: the listening socket and its clients are non-blocking and
served by the master's own select (MasterObserver.services); a client gets at most
REQUEST_LIMIT bytes and CLIENT_DEADLINE seconds, and at most MAX_CLIENTS are served at once.

Where the socket lives (docs/observability.md, "preforkctl"): `control_socket` if set; else
`$XDG_RUNTIME_DIR/django-prefork/PID.ctl`, or `/tmp/django-prefork-UID/PID.ctl` (a
directory of mode 0700 owned by the user) without XDG_RUNTIME_DIR. Keyed by the master's
pid, so `preforkctl --pid PID` finds it, and the old and new master of a USR2 upgrade each
have their own. An explicit path also gets a symlink at the per-pid place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import time
from typing import Any, Protocol

from django_prefork.server.oneshot import OneShotServer

SUFFIX = ".ctl"
RUNTIME_SUBDIR = "django-prefork"
#: Not $TMPDIR: the path must not depend on the environment of whoever looks for it.
TMP_ROOT = "/tmp"
REQUEST_LIMIT = 4096
CLIENT_DEADLINE = 5.0
MAX_CLIENTS = 8
#: Most bytes of one answer (a status with 256 workers is about 60 KB).
ANSWER_LIMIT = 1 << 20

#: Commands that act by queueing the signal an operator would send (docs/signals.md).
ACTIONS: dict[str, signal.Signals] = {
    "reload": signal.SIGHUP,
    "add-worker": signal.SIGTTIN,
    "remove-worker": signal.SIGTTOU,
    "stop": signal.SIGTERM,
    "reopen-logs": signal.SIGUSR1,
    "upgrade": signal.SIGUSR2,
}
COMMANDS = ("status", *ACTIONS)


class ControlSocketError(Exception):
    """The control socket cannot be opened; str() is one line with the fix."""


# -- where the socket is ----------------------------------------------------------------------
def private_dir(uid: int) -> str:
    return os.path.join(TMP_ROOT, f"{RUNTIME_SUBDIR}-{uid}")


def default_socket_path(pid: int, environ: Any = None, uid: int | None = None) -> str:
    """The socket's path when `control_socket` is not set, for master `pid`."""
    environ = os.environ if environ is None else environ
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    # (sudo may keep another user's XDG_RUNTIME_DIR, which this one cannot write)
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime) and os.access(
            runtime, os.W_OK | os.X_OK):
        return os.path.join(runtime, RUNTIME_SUBDIR, f"{pid}{SUFFIX}")
    return os.path.join(private_dir(os.getuid() if uid is None else uid), f"{pid}{SUFFIX}")


def _environ_of(pid: int) -> dict[str, str]:
    """Process `pid`'s environment as it was started (readable by its user and root)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def candidate_paths(pid: int) -> list[str]:
    """Where master `pid`'s default socket may be, most likely first: by the master's own
    XDG_RUNTIME_DIR, the caller's, the master's user's /run/user, its /tmp directory."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        uid = os.getuid()
    runtimes = [_environ_of(pid).get("XDG_RUNTIME_DIR", ""),
                os.environ.get("XDG_RUNTIME_DIR", ""), f"/run/user/{uid}"]
    found: list[str] = []
    for runtime in runtimes:
        if runtime and os.path.isabs(runtime):
            path = os.path.join(runtime, RUNTIME_SUBDIR, f"{pid}{SUFFIX}")
            if path not in found:
                found.append(path)
    found.append(os.path.join(private_dir(uid), f"{pid}{SUFFIX}"))
    return found


def _ensure_private_dir(directory: str) -> None:
    """Make (or check) a directory only this user may enter: another user must not be
    able to plant a socket or a symlink where ours goes."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise ControlSocketError(
            f"control socket directory {directory}: {exc.strerror}. Fix: set "
            "--control-socket (CONTROL_SOCKET) to a path in a writable directory, or pass "
            "--no-control-socket.") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or (
            info.st_mode & 0o077):
        raise ControlSocketError(
            f"control socket directory {directory} is not a directory of mode 0700 owned by "
            "this user. Fix: remove it (it is re-created), or set --control-socket "
            "(CONTROL_SOCKET) elsewhere.")


def _is_live(path: str) -> bool:
    """Does a process accept connections on the unix socket at `path`?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _bind(path: str, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Created owner-only whatever the umask (so never wider than asked, not even for a
    # moment), then given its mode.
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(MAX_CLIENTS)
    sock.setblocking(False)
    return sock


class ControlSocket:
    """The listening socket and its file: made at start (a stale file replaced), removed at
    the end only if it is still ours (a newer master may have taken the path)."""

    def __init__(self, path: str, mode: int, *, explicit: bool, pid: int,
                 takeover: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.link: str | None = None
        where = f"--control-socket (CONTROL_SOCKET) {self.path!r}"
        directory = os.path.dirname(self.path)
        if not explicit:
            _ensure_private_dir(directory)
            _remove_dead_sockets(directory)
        elif not os.path.isdir(directory):
            raise ControlSocketError(f"{where}: the directory {directory} does not exist. "
                                     "Fix: create it, or choose a path in an existing one.")
        try:
            self.sock = self._open(mode, takeover)
        except OSError as exc:
            raise ControlSocketError(f"{where} cannot be created: {exc.strerror}. Fix: "
                                     "choose a path this user may write, or pass "
                                     "--no-control-socket.") from None
        self.inode = os.stat(self.path).st_ino
        if explicit:
            self._link_at(default_socket_path(pid))

    def _open(self, mode: int, takeover: bool) -> socket.socket:
        where = f"--control-socket (CONTROL_SOCKET) {self.path!r}"
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return _bind(self.path, mode)
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlSocketError(f"{where} exists and is not a socket. Fix: remove it or "
                                     "choose another path.")
        if not _is_live(self.path):
            os.unlink(self.path)  # stale: its server is gone
            return _bind(self.path, mode)
        if not takeover:
            raise ControlSocketError(f"{where} is in use by another running server. Fix: stop "
                                     "it, or choose another path.")
        # The new master of a USR2 upgrade takes the path over from the old one: bound
        # beside it, then renamed over it (atomic; the old master's socket stays open).
        temporary = f"{self.path}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock = _bind(temporary, mode)
        os.replace(temporary, self.path)
        return sock

    def _link_at(self, link: str) -> None:
        """A symlink at the per-pid default place, so `preforkctl --pid` finds us."""
        from logging import getLogger

        try:
            _ensure_private_dir(os.path.dirname(link))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.path, link)
            self.link = link
        except (OSError, ControlSocketError) as exc:
            getLogger("django_prefork.error").warning(
                "Control socket: no link at %s (%s): preforkctl needs --control-socket %s",
                link, exc, self.path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close_in_child(self) -> None:
        """A forked worker lets go of the socket without touching the file."""
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        if self.link is not None:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self.path:
                    os.unlink(self.link)


def _remove_dead_sockets(directory: str) -> None:
    """PID.ctl files of masters that are gone (killed before they could clean up)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            stem = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else ""
            if not stem.isdigit() or pid_exists(int(stem)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the master's side ------------------------------------------------------------------------
class ControlledServer(Protocol):
    """What the control socket reads of the arbiter, and the one thing it calls."""

    pid: int
    workers: dict[int, Any]
    num_workers: int
    generation: int
    stopping: bool
    observer: Any

    def _queue_signal(self, signum: int, frame: Any) -> None: ...


class ControlServer(OneShotServer):
    """Serves the protocol on a ControlSocket: one JSON line in, one out (oneshot.py)."""

    request_limit = REQUEST_LIMIT
    client_deadline = CLIENT_DEADLINE
    max_clients = MAX_CLIENTS

    def __init__(self, control: ControlSocket, server: ControlledServer) -> None:
        super().__init__(control.sock)
        self.control = control
        self.server = server
        self.started = time.monotonic()

    @property
    def path(self) -> str:
        return self.control.path

    def close(self) -> None:
        self.close_clients()
        self.control.close()

    def close_in_child(self) -> None:
        for client in self.clients.values():
            client.sock.close()
        self.clients = {}
        self.control.close_in_child()

    def answer_for(self, received: bytes, eof: bool) -> bytes | None:
        end = received.find(b"\n")
        if end < 0 and not eof and len(received) < REQUEST_LIMIT:
            return None  # more to come
        if end < 0 and len(received) >= REQUEST_LIMIT:
            answer = {"ok": False, "error": f"request longer than {REQUEST_LIMIT} bytes"}
        elif end < 0 and not received:
            return None  # gone without a word
        else:
            answer = self.answer(received[:end if end >= 0 else None])
        return (json.dumps(answer, separators=(",", ":")).encode() + b"\n")[:ANSWER_LIMIT]

    # -- answers -------------------------------------------------------------------------
    def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line; never raises (a bug must not end the master)."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not a JSON object"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'expected {"command": NAME}'}
        command = request["command"]
        wanted = request.get("pid")
        if wanted is not None and wanted != self.server.pid:
            # (a --pid link whose explicit path a USR2 upgrade's new master took over)
            return {"ok": False, "error": f"this is master {self.server.pid}, not {wanted}: "
                                          "its socket was taken over (a USR2 upgrade?)"}
        try:
            if command == "status":
                return {"ok": True, **status_report(self.server, self.started, self.path)}
            if command in ACTIONS:
                sig = ACTIONS[command]
                if command == "stop" and request.get("quick"):
                    sig = signal.SIGQUIT
                self.server._queue_signal(sig, None)
                return {"ok": True, "command": command, "signal": sig.name[3:]}
        except Exception as exc:  # answered: a bug here must not end the master
            return {"ok": False, "error": f"{command} failed: {exc}"}
        return {"ok": False, "error": f"unknown command {command!r}; one of "
                                      + ", ".join(COMMANDS)}


def status_report(server: ControlledServer, started: float, path: str) -> dict[str, Any]:
    """Master and per-worker numbers for `preforkctl status` (PSS is read by the command:
    /proc/PID/smaps_rollup costs the kernel a walk of each worker's page tables)."""
    now = time.monotonic()
    board = server.observer.board
    counts = board.workers() if board is not None else {}
    workers = []
    for record in sorted(server.workers.values(), key=lambda r: r.age):
        mine = counts.get(record.pid)
        serving = sorted(mine.serving, key=lambda item: item[1]) if mine else []
        workers.append({
            "pid": record.pid,
            "age": round(now - record.started_at, 3),
            "generation": record.generation,
            "booted": bool(record.ready),
            "retiring": bool(record.retiring),
            "requests": mine.requests if mine else 0,
            "in_flight": mine.in_flight if mine else 0,
            "serving": [{"request": line, "seconds": round(max(0.0, now - since), 3)}
                        for line, since in serving],
        })
    totals = board.totals() if board is not None else None
    return {
        "master": {
            "pid": server.pid,
            "age": round(now - started, 3),
            "generation": server.generation,
            "workers_wanted": server.num_workers,
            "stopping": bool(server.stopping),
            "control_socket": path,
        },
        "workers": workers,
        "totals": {
            "workers": len(workers),
            "requests": sum(totals.requests.values()) if totals else 0,
            "in_flight": totals.in_flight if totals else 0,
            "busy_workers": totals.busy_workers if totals else 0,
        },
    }


def open_control_server(cfg: Any, server: ControlledServer, *,
                        takeover: bool = False) -> ControlServer | None:
    """The control socket for this master, or None with `control_socket_disable`;
    raises ControlSocketError (one line)."""
    if cfg.control_socket_disable:
        return None
    if cfg.control_socket:
        control = ControlSocket(cfg.control_socket, cfg.control_socket_mode, explicit=True,
                                pid=server.pid, takeover=takeover)
        return ControlServer(control, server)
    # The default place: a problem there must not stop a server whose operator asked for
    # nothing (a warning, and no control socket), unlike a path the operator chose.
    try:
        control = ControlSocket(default_socket_path(server.pid), cfg.control_socket_mode,
                                explicit=False, pid=server.pid)
    except ControlSocketError as exc:
        from logging import getLogger

        getLogger("django_prefork.error").warning(
            "No control socket (preforkctl cannot reach this master): %s", exc)
        return None
    return ControlServer(control, server)


# -- the client's side ------------------------------------------------------------------------
class ControlClientError(Exception):
    """The master could not be asked; str() is one line."""


def ask(path: str, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the control socket at `path`; its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlClientError(f"no control socket at {path}") from None
        except PermissionError:
            raise ControlClientError(
                f"permission denied on the control socket {path}: run as the server's user "
                "(or widen --control-socket-mode)") from None
        except ConnectionRefusedError:
            raise ControlClientError(
                f"the control socket {path} refuses connections: its master is gone "
                "(a stale file)") from None
        except OSError as exc:
            raise ControlClientError(f"cannot connect to {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = bytearray()
            while not data.endswith(b"\n") and len(data) <= ANSWER_LIMIT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlClientError(f"no answer from {path} within {timeout:g} s") from None
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                raise ControlClientError(f"the master at {path} closed the connection") from None
            raise ControlClientError(f"talking to {path}: {exc.strerror}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(bytes(data))
    except ValueError:
        raise ControlClientError(f"the answer from {path} is not JSON (is it a "
                                 "django-prefork control socket?)") from None
    if not isinstance(answer, dict):
        raise ControlClientError(f"the answer from {path} is not a JSON object")
    return answer
