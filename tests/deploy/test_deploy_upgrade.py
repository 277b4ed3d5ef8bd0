"""Rolling upgrade through nginx: each instance in turn is upgraded with USR2, then its old
master gets TERM, while a load generator runs through nginx. No request fails, and the
instances' access logs hold every request sent, once.

The contract (gunicorn's): USR2 makes the master re-exec itself with its listening sockets
inherited; the new master writes PIDFILE.2 and serves beside the old one; the operator
sends TERM to the old master, which finishes its requests and exits without removing the
unix socket file the new master still serves; the new master then takes PIDFILE over.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploykit import (
    Instance,
    Load,
    Nginx,
    UnixHTTPConnection,
    fetch,
    served_ids,
    wait_served,
    worker_identity,
)

from server import children_of, pid_alive, wait_until

pytestmark = pytest.mark.integration


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_master(pid: int) -> None:
    """TERM a master that is not our child (a re-exec'd one), then KILL what it leaves."""
    family = [pid]
    for parent in family:
        family.extend(c for c in children_of(parent) if c not in family)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not pid_alive(pid), timeout=30, message=f"master {pid} to exit")
    for target in family:
        if pid_alive(target):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)


@dataclass
class Upgradable:
    instance: Instance
    upstream: str  # nginx's upstream that reaches only this instance
    pidfile: Path
    masters: list[int]

    def direct(self) -> tuple[int, dict[str, str], bytes]:
        """GET /api/info/ from the instance itself, not through nginx."""
        bind = self.instance.bind
        if bind.startswith("unix:"):
            conn = UnixHTTPConnection(bind.removeprefix("unix:"), timeout=30)
        else:
            assert self.instance.server is not None
            conn = self.instance.server.connection()
        return fetch(conn, "GET", "/api/info/")


@dataclass
class UpgradeSite:
    nginx: Nginx
    instances: list[Upgradable]


@pytest.fixture(scope="module")
def upgrade_site(nginx_binary: str, deploy_dir: Path,
                 demo_env: dict[str, str]) -> Iterator[UpgradeSite]:
    identity = worker_identity()
    group = identity[1] if identity else None
    members: list[Upgradable] = []
    nginx = None
    try:
        for name, bind, extra in (
            ("upgrade-unix", f"unix:{deploy_dir / 'upgrade-unix.sock'}",
             ("--umask", "0o117")),
            ("upgrade-tcp", "127.0.0.1:0", ()),
        ):
            pidfile = deploy_dir / f"{name}.pid"
            instance = Instance(name, bind, demo_env, deploy_dir,
                                args=(*extra, "--pid", str(pidfile)),
                                group=group if bind.startswith("unix:") else None)
            instance.start()
            assert instance.server is not None
            members.append(Upgradable(instance, f"only_{len(members)}", pidfile,
                                      [instance.server.pid]))
        own = deploy_dir / "upgrade-nginx"  # apart from the other module's nginx
        own.mkdir(mode=0o755)
        nginx = Nginx(
            nginx_binary, own,
            upstreams={"demo": [m.instance.bind for m in members],
                       **{m.upstream: [m.instance.bind] for m in members}},
            identity=identity,
        )
        nginx.start()
        yield UpgradeSite(nginx, members)
    finally:
        if nginx is not None:
            nginx.stop()
        for member in members:
            for pid in reversed(member.masters[1:]):
                stop_master(pid)
            member.instance.stop()


def upgrade(member: Upgradable) -> int:
    """USR2, wait until the new master's workers serve, TERM the old master."""
    old = member.masters[-1]
    assert read_pid(member.pidfile) == old
    second = member.pidfile.with_name(member.pidfile.name + ".2")
    os.kill(old, signal.SIGUSR2)

    def new_master() -> int | None:
        if not pid_alive(old):
            raise AssertionError(f"the master {old} exited on USR2 instead of upgrading")
        return read_pid(second)

    new = wait_until(new_master, timeout=60,
                     message=f"USR2 to start a new master writing {second}")
    assert isinstance(new, int) and new != old
    member.masters.append(new)

    def new_generation_serves() -> bool:
        status, _, body = member.direct()
        return status == 200 and json.loads(body)["pid"] in children_of(new)

    wait_until(new_generation_serves, timeout=60, interval=0.1,
               message=f"the workers of the new master {new} to serve")
    os.kill(old, signal.SIGTERM)
    server = member.instance.server
    assert server is not None and server.proc is not None
    assert server.proc.wait(timeout=60) == 0  # the first master was started by this test
    wait_until(lambda: read_pid(member.pidfile) == new and not second.exists(), timeout=30,
               message=f"the new master {new} to take {member.pidfile} over")
    return new


def test_rolling_upgrade_through_nginx_loses_no_request(upgrade_site):
    site = upgrade_site
    load = Load(lambda: site.nginx.connection("demo")).start()
    try:
        load.wait_for(100)
        for member in site.instances:
            wait_served(member.instance)
        for member in site.instances:
            new = upgrade(member)
            load.wait_for(150)
            # the upgraded instance still serves through nginx, from the new generation
            if member.instance.bind.startswith("unix:"):
                assert os.path.exists(member.instance.bind.removeprefix("unix:")), \
                    "the old master removed the unix socket the new master serves"
            status, _, body = site.nginx.get("/api/info/", upstream=member.upstream)
            assert status == 200, body[:300]
            assert json.loads(body)["pid"] in children_of(new)
        load.wait_for(100)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    assert len(load.ok) == len(load.sent)

    def served_counts() -> collections.Counter[str]:
        return collections.Counter(
            request_id for member in site.instances
            for request_id in served_ids(member.instance.access_lines()))

    # A worker writes a request's access-log line after its response: the last answers of
    # the load may be logged a moment after the client has them.
    wait_until(lambda: sum(served_counts().values()) >= len(load.sent), timeout=15,
               message="an access-log line for every request answered")
    served = served_counts()
    duplicates = [request_id for request_id, count in served.items() if count > 1]
    assert duplicates == [], f"served twice: {duplicates[:10]}"
    assert sum(served.values()) == len(load.sent)
    assert set(served) == set(load.sent)
