"""Real deployment parts for tests/deploy: nginx from Debian's packages, runprefork instances
of the demo project behind it, and a load generator that counts every request.

Every process started here is stopped by PID, every wait has a deadline, and all traffic
stays on 127.0.0.1 and unix sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import REPO_ROOT, Server, children_of, pid_alive, wait_until

NGINX_PACKAGES = ("nginx-light", "nginx")  # nginx-light was folded into nginx after bookworm
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
#: The user nginx's workers run as when the tests run as root: the case where a unix
#: socket's mode decides between 200 and 502.
WORKER_USER = "www-data"


# -- nginx from the distribution ------------------------------------------------------------

def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in NGINX_PATHS if os.access(path, os.X_OK)), None)


def _apt_candidate(package: str) -> bool:
    """Whether apt knows a version of package it could install (`apt-cache policy`)."""
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            return value.strip() not in ("", "(none)")
    return False


def install_nginx() -> tuple[str | None, str]:
    """nginx's path, installing it with apt when missing and allowed; else (None, reason)."""
    found = find_nginx()
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, ("nginx is not installed, and installing it needs root and apt-get "
                      "(CI runs .ci/run, which installs it)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    update = subprocess.run(["apt-get", "update"], capture_output=True, text=True,
                            timeout=300, env=env, stdin=subprocess.DEVNULL)
    if update.returncode != 0:
        return None, f"apt-get update failed: {update.stderr.strip()[-300:]}"
    package = next((p for p in NGINX_PACKAGES if _apt_candidate(p)), None)
    if package is None:
        return None, f"apt has no candidate for any of {', '.join(NGINX_PACKAGES)}"
    with _services_not_started():
        install = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    if install.returncode != 0:
        return None, f"apt-get install {package} failed: {install.stderr.strip()[-300:]}"
    found = find_nginx()
    return (found, "") if found else (None, f"{package} installed but no nginx binary found")


@contextlib.contextmanager
def _services_not_started():
    """Keep the package's maintainer scripts from starting a system nginx on port 80.

    Debian's invoke-rc.d asks /usr/sbin/policy-rc.d first; exit status 101 means "do not
    start". The file is only written when none exists, and removed afterwards.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


def free_port() -> int:
    """A port the kernel considers free now (nginx cannot report a port 0 choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_identity() -> tuple[str, str] | None:
    """(user, group) for nginx's workers and the instances' group, when running as root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(WORKER_USER)
    except KeyError:
        return None
    return WORKER_USER, WORKER_USER


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every descendant (read from /proc), as a crash would end them.

    The PIDs are collected first, then killed together: nothing gets to notice a parent's
    death and clean up (a stale unix socket file stays behind, as after a real crash).
    """
    pids = [pid]
    for parent in pids:
        pids.extend(child for child in children_of(parent) if child not in pids)
    for target in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=20,
               message=f"SIGKILLed processes {pids} to die")
    return pids


# -- the demo project -----------------------------------------------------------------------

def manage(env: dict[str, str], *args: str, timeout: float = 300) -> None:
    """Run a manage.py command of the demo project; fail with its output."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args], env=env,
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}"


@dataclass
class Instance:
    """One runprefork of the demo project at a fixed address, restartable at that address."""

    name: str
    bind: str
    env: dict[str, str]
    directory: Path
    args: tuple[str, ...] = ()
    group: str | None = None
    workers: int = 2
    server: Server | None = None
    starts: int = 0
    history: list[Server] = field(default_factory=list)

    def start(self) -> Instance:
        self.starts += 1
        server = Server("--workers", str(self.workers), "--access-logfile",
                        str(self.access_log), "--graceful-timeout", "20", *self.args,
                        manage_py=True, bind=self.bind, env=self.env)
        popen: dict[str, Any] = {"group": self.group} if self.group else {}
        server.start(wait_workers=self.workers, timeout=60, **popen)
        if not self.bind.startswith("unix:"):  # the next start takes the same port
            self.bind = f"{server.host}:{server.port}"
        self.server = server
        self.history.append(server)
        return self

    @property
    def access_log(self) -> Path:
        return self.directory / f"{self.name}-access-{self.starts}.log"

    def access_lines(self, start: int | None = None) -> list[str]:
        path = self.directory / f"{self.name}-access-{start or self.starts}.log"
        try:
            return path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        for server in self.history:
            server.stop()


# -- nginx ----------------------------------------------------------------------------------

@dataclass
class Nginx:
    """nginx in the foreground with a generated config: its own pid file, logs, temp paths."""

    binary: str
    directory: Path
    #: upstream name -> its servers (`unix:/path` or `127.0.0.1:port`); nginx listens on
    #: one port per upstream, and "demo" also on a unix socket and, with a certificate, TLS
    upstreams: dict[str, list[str]]
    certificate: tuple[Path, Path] | None = None
    identity: tuple[str, str] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    tls_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def unix_path(self) -> Path:
        return self.directory / "nginx.sock"

    def config(self) -> str:
        d = self.directory
        temp = d / "nginx-temp"
        user = f"user {self.identity[0]} {self.identity[1]};" if self.identity else ""
        blocks = []
        for name, servers in self.upstreams.items():
            # max_fails/fail_timeout: a dead instance is skipped for 2 s, then tried again,
            # so a restarted one is back in rotation quickly.
            lines = "".join(f"        server {s} max_fails=1 fail_timeout=2s;\n"
                            for s in servers)
            blocks.append(f"    upstream {name} {{\n{lines}    }}\n")
        proxy = """
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 0;
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
            proxy_redirect off;"""
        servers = []
        for name in self.upstreams:
            extra = f"listen unix:{self.unix_path};" if name == "demo" else ""
            servers.append(f"""
    server {{
        listen 127.0.0.1:{self.ports[name]};
        {extra}
        server_name localhost;
        location / {{
            proxy_pass http://{name};{proxy}
        }}
    }}""")
        if self.certificate:
            cert, key = self.certificate
            servers.append(f"""
    server {{
        listen 127.0.0.1:{self.tls_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://demo;{proxy}
        }}
    }}""")
        return f"""{user}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 64m;
    sendfile on;
{"".join(blocks)}{"".join(servers)}
}}
"""

    def start(self) -> Nginx:
        temp = self.directory / "nginx-temp"
        temp.mkdir(exist_ok=True)
        if self.identity:
            shutil.chown(temp, *self.identity)
        for name in self.upstreams:
            self.ports[name] = free_port()
        if self.certificate:
            self.tls_port = free_port()
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        args = [self.binary, "-p", str(self.directory), "-c", str(conf),
                "-e", str(self.directory / "nginx-error.log")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        assert check.returncode == 0, f"nginx -t:\n{check.stderr}\n{conf.read_text()}"
        with open(self.directory / "nginx-stderr.log", "wb") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_until(self._accepting, timeout=30, message=f"nginx to listen; {self.log_tail()}")
        return self

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            for port in self.ports.values():
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return False
        return True

    def log_tail(self) -> str:
        text = ""
        for name in ("nginx-stderr.log", "nginx-error.log"):
            with contextlib.suppress(OSError):
                text += (self.directory / name).read_text()[-3000:]
        return text

    def stop(self) -> None:
        """QUIT (graceful) to the master by PID, then KILL what is left of it."""
        if self.proc is None:
            return
        workers = children_of(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in workers:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- clients --------------------------------------------------------------------------
    def connection(self, upstream: str = "demo", timeout: float = 60.0,
                   source: str | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.ports[upstream], timeout=timeout,
            source_address=(source, 0) if source else None)

    def tls_connection(self, timeout: float = 60.0) -> http.client.HTTPSConnection:
        assert self.certificate is not None
        context = ssl.create_default_context(cafile=str(self.certificate[0]))
        return http.client.HTTPSConnection("localhost", self.tls_port, timeout=timeout,
                                           context=context)

    def unix_connection(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        return UnixHTTPConnection(str(self.unix_path), timeout=timeout)

    def get(self, path: str, upstream: str = "demo", headers: dict[str, str] | None = None,
            source: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return fetch(self.connection(upstream, source=source), "GET", path, headers=headers)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (Host: localhost)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def fetch(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A certificate for localhost/127.0.0.1 made with openssl, or None without openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    return cert, key


def pattern_sha256(seed: str, size: int, chunk: int = 64 * 1024) -> str:
    """The SHA-256 of what the demo's /download/ sends for seed and size."""
    block = hashlib.shake_256(seed.encode()).digest(chunk)
    digest = hashlib.sha256()
    left = size
    while left > 0:
        piece = block[: min(left, chunk)]
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


# -- load -----------------------------------------------------------------------------------

@dataclass
class Load:
    """Threads sending GETs through nginx until stopped; every request is accounted for.

    Each request carries a unique id (``?load=<id>``) so the access logs of the instances
    can be matched with what was sent.
    """

    connect: Callable[[], http.client.HTTPConnection]
    path: str = "/api/info/"
    threads: int = 4
    limit: int = 20_000  # bound on the number of requests, whatever happens
    sent: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._workers: list[threading.Thread] = []

    def _next_id(self) -> str | None:
        with self._lock:
            if self._counter >= self.limit:
                return None
            self._counter += 1
            request_id = f"r{self._counter}"
            self.sent.append(request_id)
            return request_id

    def _run(self) -> None:
        import json

        while not self._stop.is_set():
            request_id = self._next_id()
            if request_id is None:
                return
            try:
                status, _, body = fetch(self.connect(), "GET", f"{self.path}?load={request_id}")
                if status != 200:
                    raise AssertionError(f"status {status}: {body[:200]!r}")
                pid = int(json.loads(body)["pid"])
            except Exception as exc:  # every kind of failure counts, and is reported
                with self._lock:
                    self.failures.append(f"{request_id}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.ok.append(request_id)
                self.pids[request_id] = pid

    def start(self) -> Load:
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def wait_for(self, count: int, timeout: float = 60) -> None:
        """Wait until `count` more requests have been answered than now."""
        target = len(self.ok) + len(self.failures) + count
        wait_until(lambda: len(self.ok) + len(self.failures) >= target or self.exhausted(),
                   timeout=timeout, message=f"{count} more load requests")
        assert not self.exhausted(), "the load generator hit its request limit"

    def exhausted(self) -> bool:
        return self._counter >= self.limit

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=90)
        assert not any(t.is_alive() for t in self._workers), "load threads did not finish"

    def served_by(self, pids: set[int]) -> int:
        return sum(1 for pid in self.pids.values() if pid in pids)

    def since(self, mark: int) -> list[str]:
        return self.ok[mark:]


def served_ids(lines: list[str]) -> list[str]:
    """The load ids in access-log lines (``GET /api/info/?load=r17 HTTP/1.0``)."""
    out = []
    for line in lines:
        start = line.find("?load=")
        if start >= 0:
            end = start + len("?load=")
            stop = end
            while stop < len(line) and line[stop].isalnum():
                stop += 1
            out.append(line[end:stop])
    return out


def wait_served(instance: Instance, minimum: int = 1, timeout: float = 30) -> None:
    wait_until(lambda: len(served_ids(instance.access_lines())) >= minimum, timeout=timeout,
               message=f"{instance.name} to serve {minimum} load requests")
