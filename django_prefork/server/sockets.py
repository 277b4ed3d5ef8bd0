"""Listening sockets: created and bound once in the master, shared by every worker.

The master binds before any worker exists, so a bad address fails start-up with one clear
line, and `--bind 127.0.0.1:0` can report the port the kernel chose. Workers receive the
sockets by inheritance (fork) or as file descriptors (fresh interpreters).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import Any

from django_prefork.conf import BindSpec

log = logging.getLogger("django_prefork.error")

# sd_listen_fds(3): inherited sockets start at fd 3.
SYSTEMD_FIRST_FD = 3
# Set by a master starting its successor (USR2, server/upgrade.py): the listening sockets the
# new master inherits instead of binding, as JSON [[fd, spec], ...].
INHERIT_ENV_VAR = "DJANGO_PREFORK_INHERIT_FDS"


class BindError(Exception):
    """A listening socket could not be created; str() is one line for the operator."""


@dataclass
class Listener:
    """One bound, listening socket and what the banner and the environ need to know of it."""

    sock: socket.socket
    spec: str
    owns_path: bool = False  # a unix socket file we created and must remove on shutdown
    #: The address actually bound (with the kernel's port when 0 was asked for); read once,
    #: since every request's environ needs it.
    address: tuple[Any, ...] | str = field(init=False)

    def __post_init__(self) -> None:
        self.address = self.sock.getsockname()

    @property
    def family(self) -> int:
        return self.sock.family

    def url(self) -> str:
        addr = self.address
        if self.family == socket.AF_UNIX:
            path = addr.decode() if isinstance(addr, bytes) else addr
            return f"unix:{path}"
        host, port = addr[0], addr[1]
        if self.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, unlink: bool = True) -> None:
        path = self.address if self.family == socket.AF_UNIX else None
        with contextlib.suppress(OSError):
            self.sock.close()
        if unlink and self.owns_path and isinstance(path, str):
            with contextlib.suppress(OSError):
                os.unlink(path)


def create_listeners(specs: list[BindSpec], backlog: int, umask: int = 0,
                     reuse_port: bool = False) -> list[Listener]:
    """Bind every address; on any failure close what was opened and raise BindError.

    ``umask`` masks the mode of unix socket files (the ``umask`` setting); ``reuse_port``
    sets SO_REUSEPORT on TCP listeners (the ``reuse_port`` setting).
    """
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listeners.append(_create_listener(spec, backlog, umask, reuse_port))
    except BindError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def systemd_listeners() -> list[Listener]:
    """Sockets handed over by systemd socket activation (LISTEN_FDS), if they are for us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    listeners = []
    for fd in range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + count):
        sock = socket.socket(fileno=fd)
        listeners.append(Listener(sock, f"fd://{fd}"))
    return listeners


def inheritance_spec(listeners: list[Listener]) -> str:
    """The INHERIT_ENV_VAR value that hands listeners to a new master started by this one."""
    return json.dumps([[listener.fileno(), listener.spec] for listener in listeners])


def inherited_listeners() -> list[Listener]:
    """The sockets an old master handed over in a binary upgrade (USR2), if any.

    As gunicorn does, the new master serves exactly the inherited sockets, whatever its bind
    setting says now: a later HUP applies a changed bind list. They are adopted even if the
    old master has already gone (they are open in this process either way). Socket files are
    not ours to remove until the old master has gone (server/upgrade.py sets owns_path then).
    """
    value = os.environ.pop(INHERIT_ENV_VAR, None)
    if not value:
        return []
    try:
        entries = [(int(fd), str(name)) for fd, name in json.loads(value)]
    except (ValueError, TypeError):
        log.warning("Ignoring %s=%r: not what an old master writes", INHERIT_ENV_VAR, value)
        return []
    listeners: list[Listener] = []
    try:
        for fd, name in entries:
            listeners.append(_adopt_inherited(fd, name))
    except BindError:
        for listener in listeners:
            listener.close(unlink=False)
        raise
    return listeners


def _adopt_inherited(fd: int, name: str) -> Listener:
    try:
        sock = socket.socket(fileno=fd)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        raise BindError(f"Could not use the inherited socket {name} (fd {fd}): "
                        f"{exc.strerror or exc}") from None
    if not listening:
        sock.detach()  # not ours to close
        raise BindError(f"Could not use the inherited socket {name} (fd {fd}): it is not a "
                        "listening socket")
    sock.set_inheritable(False)  # as a socket we bound ourselves
    return Listener(sock, name)


def listeners_from_fds(fds: list[int], specs: list[str]) -> list[Listener]:
    """Rebuild Listener objects in a worker from inherited descriptors."""
    return [Listener(socket.socket(fileno=fd), spec) for fd, spec in zip(fds, specs, strict=False)]


def _create_listener(spec: BindSpec, backlog: int, umask: int,
                     reuse_port: bool = False) -> Listener:
    if spec.kind == "fd":
        return _adopt_fd(spec)
    if spec.kind == "unix":
        return _bind_unix(spec, backlog, umask)
    return _bind_tcp(spec, backlog, reuse_port)


def _adopt_fd(spec: BindSpec) -> Listener:
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise BindError(f"Could not use {spec}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        raise BindError(f"Could not use {spec}: it is not a stream socket")
    with contextlib.suppress(OSError):
        sock.listen()  # harmless when already listening; needed when handed a bound socket
    return Listener(sock, str(spec))


def _bind_tcp(spec: BindSpec, backlog: int, reuse_port: bool = False) -> Listener:
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BindError(f"Could not bind to {spec}: cannot resolve {spec.host!r} ({exc})") from None
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Lets other sockets (another server, a blue/green twin) bind the same port;
            # the kernel spreads new connections over them (gunicorn's --reuse-port).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"Could not bind to {spec}: {_describe(exc)}") from None
    return Listener(sock, str(spec))


def _bind_unix(spec: BindSpec, backlog: int, umask: int) -> Listener:
    path = spec.path
    assert path is not None
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            _remove_stale_socket(path, spec)
        else:
            raise BindError(f"Could not bind to {spec}: {path} exists and is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind(2) creates the file with mode 0777 & ~umask. As gunicorn does, the umask is set
    # only around bind, so the file never exists with a wider mode than asked (no window
    # between bind and a chmod) and the rest of the process keeps the umask it was started
    # with.
    previous_umask = os.umask(umask)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise BindError(f"Could not bind to {spec}: {_describe(exc)}") from None
    finally:
        os.umask(previous_umask)
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise BindError(f"Could not bind to {spec}: {_describe(exc)}") from None
    return Listener(sock, str(spec), owns_path=True)


def _remove_stale_socket(path: str, spec: BindSpec) -> None:
    """Remove a socket file left by a crashed server, but never one somebody still serves."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Nobody listens: the file outlived its server (a crash, a SIGKILL).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        # EACCES and the like: we cannot tell whether it is served, so leave it alone.
        raise BindError(f"Could not bind to {spec}: {path} exists and cannot be probed "
                        f"({exc.strerror or exc}); remove it if no server uses it") from None
    finally:
        probe.close()
    raise BindError(f"Could not bind to {spec}: another server is listening on {path}")


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (is another server running?)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


@dataclass
class ListenerChange:
    """The listeners after a bind-list change, and which of them are new or gone."""

    listeners: list[Listener]
    added: list[Listener]
    removed: list[Listener]


def reconcile_listeners(current: list[Listener], specs: list[BindSpec],
                        backlog: int, umask: int = 0,
                        reuse_port: bool = False) -> ListenerChange:
    """Keep the listeners whose address is still wanted, open the added ones.

    An address kept keeps its socket object: binding it again would fail with "address
    already in use" (the old socket still holds it) and would drop the connections queued on
    it. The removed ones are returned, not closed: the caller closes them once no worker of
    the old generation needs them. BindError (with nothing opened) if an added one fails.
    """
    by_spec = {listener.spec: listener for listener in current}
    wanted = [str(spec) for spec in specs]
    new = create_listeners([spec for spec in specs if str(spec) not in by_spec], backlog, umask,
                           reuse_port=reuse_port)
    opened = iter(new)
    listeners = [by_spec[text] if text in by_spec else next(opened) for text in wanted]
    removed = [listener for listener in current if listener.spec not in wanted]
    return ListenerChange(listeners, new, removed)
