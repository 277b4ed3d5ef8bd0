"""The distribution a user installs: builds cleanly, passes twine, ships only the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from server import REPO_ROOT

pytest.importorskip("build", reason="the 'test' extra installs build")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: building in place would leave build/ and *.egg-info in the tree.
    source = tmp_path_factory.mktemp("src") / "django-prefork"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", "staticfiles",
        "db.sqlite3", "results"))
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
         "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_wheel_contains_only_the_package(dist: Path):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"django_prefork", f"{wheel.name.split('-')[0]}-"
                    f"{wheel.name.split('-')[1]}.dist-info"}
    assert "django_prefork/py.typed" in names
    assert "django_prefork/management/commands/runprefork.py" in names
    assert not any(name.startswith(("tests/", "demo_project/", "bench/")) for name in names)


def test_metadata_passes_twine_check(dist: Path):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metadata_declares_versions_and_extras(dist: Path):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta_name).decode()
    assert "Requires-Python: >=3.10" in metadata
    for classifier in ("Framework :: Django :: 5.2", "Framework :: Django :: 6.1",
                       "Programming Language :: Python :: 3.13"):
        assert f"Classifier: {classifier}" in metadata
    assert "Provides-Extra: gevent" in metadata
    assert "License-Expression: BSD-3-Clause" in metadata or "License: BSD-3-Clause" in metadata
