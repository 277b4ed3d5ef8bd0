"""nginx as the load balancer in front of runprefork instances, for bench/scaling.py's
"workers vs instances" scenario: a generated config in a temporary directory, loopback only.

nginx is used if it is installed; nothing here installs it (tests/deploy does, for CI).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from run import children_of

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)


def config(directory: Path, port: int, upstreams: list[int]) -> str:
    """One worker process, no access log, HTTP/1.1 keep-alive to the upstreams (so the proxy
    does not add a connect per request where the instance keeps connections open)."""
    temp = directory / "temp"
    # As root nginx's workers switch to an unprivileged user; nobody must read its temp dir.
    user = "user nobody nogroup;" if os.geteuid() == 0 and _has_user("nobody") else ""
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in upstreams)
    return f"""{user}
worker_processes 1;
daemon off;
master_process on;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream instances {{
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{
            proxy_pass http://instances;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class Nginx:
    """nginx in the foreground (its master is our child), stopped by PID. Its config, pid
    file, logs and temp paths live in a directory of its own (readable by the unprivileged
    user its workers run as under root), removed when it stops."""

    def __init__(self, binary: str, port: int, upstreams: list[int]) -> None:
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.directory.chmod(0o755)
        self.port = port
        self.upstreams = upstreams
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        (self.directory / "temp").mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(config(self.directory, self.port, self.upstreams))
        args = [self.binary, "-p", str(self.directory), "-c", str(conf),
                "-e", str(self.directory / "error.log")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr.strip()[-300:]}")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not listen (exit {self.proc.poll()})")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """QUIT (graceful) the master, then KILL it by PID if it lingers; its workers exit
        with it."""
        if self.proc is None or self.proc.poll() is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        workers = children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in workers:  # a worker its master did not take along (checked: same PID,
            try:             # still an nginx process, not a reused PID)
                alive = Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx")
            except OSError:
                continue
            if alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)
