"""Session fixtures for tests/deploy: nginx, the demo project's database and static files,
and runprefork instances of the demo behind nginx.

nginx comes from Debian's packages: installed here when it is missing and the tests run as
root with apt (CI's .ci/run installs it beforehand, so CI never skips); otherwise every test
of this directory is skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploykit import (
    Instance,
    Nginx,
    install_nginx,
    manage,
    self_signed_certificate,
    worker_identity,
)

#: The umask that gives a socket mode 0660: nginx's workers connect through the group.
SHARED_UMASK = "0o117"
#: A socket nginx's workers must not be able to open (0600): the 502 a wrong mode gives.
PRIVATE_UMASK = "0o177"


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    path, reason = install_nginx()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def deploy_dir() -> Iterator[Path]:
    """A directory nginx's worker user can traverse (pytest's tmp_path is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="prefork-deploy-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_env(deploy_dir: Path) -> dict[str, str]:
    """The demo project's environment, with a migrated temp SQLite DB and collected static."""
    env = dict(os.environ)
    for name in ("PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
        env.pop(name, None)
    env.update({
        "DJANGO_SETTINGS_MODULE": "demo_project.settings",
        "DJANGO_SQLITE_PATH": str(deploy_dir / "demo.sqlite3"),
        "DJANGO_STATIC_ROOT": str(deploy_dir / "static"),
        "DJANGO_BEHIND_PROXY": "1",
        "PYTHONUNBUFFERED": "1",
    })
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")
    return env


@dataclass
class Site:
    """nginx with the demo's instances behind it."""

    nginx: Nginx
    unix: Instance  # over a unix socket with mode 0660 (umask 0o117)
    tcp: Instance  # over TCP on loopback
    private: Instance  # over a unix socket with mode 0600 (umask 0o177)
    directory: Path

    @property
    def instances(self) -> list[Instance]:
        return [self.unix, self.tcp]


@pytest.fixture(scope="session")
def site(nginx_binary: str, deploy_dir: Path, demo_env: dict[str, str]) -> Iterator[Site]:
    identity = worker_identity()
    group = identity[1] if identity else None
    started: list[Instance] = []
    nginx = None
    try:
        unix = Instance("unix", f"unix:{deploy_dir / 'demo-unix.sock'}", demo_env, deploy_dir,
                        args=("--umask", SHARED_UMASK), group=group)
        tcp = Instance("tcp", "127.0.0.1:0", demo_env, deploy_dir)
        private = Instance("private", f"unix:{deploy_dir / 'demo-private.sock'}", demo_env,
                           deploy_dir, args=("--umask", PRIVATE_UMASK), group=group, workers=1)
        for instance in (unix, tcp, private):
            started.append(instance.start())
        nginx = Nginx(
            nginx_binary, deploy_dir,
            upstreams={
                "demo": [unix.bind, tcp.bind],
                "only_unix": [unix.bind],
                "only_tcp": [tcp.bind],
                "only_private": [private.bind],
            },
            certificate=self_signed_certificate(deploy_dir),
            identity=identity,
        ).start()
        yield Site(nginx, unix, tcp, private, deploy_dir)
    finally:
        if nginx is not None:
            nginx.stop()
        for instance in started:
            instance.stop()
