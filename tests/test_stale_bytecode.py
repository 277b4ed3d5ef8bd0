"""A module rewritten within the second of its last import, to the same size, is read anew.

Python trusts a timestamp .pyc that records the source's mtime in whole seconds and its size,
so without `forget_stale_bytecode` a fresh interpreter would import the old code. The HUP
end of this (a settings file edited right after the server started) is
tests/test_arbiter.py::test_hup_rereads_settings.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from django_prefork.workers.project import forget_stale_bytecode


def _import_in_fresh_interpreter(path: Path, module: str) -> str:
    """VALUE of `module`, imported by a new interpreter that writes bytecode."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(path)
    done = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.VALUE)"],
                          env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


# A second well in the past, so that every time below is set, none read from the clock.
SECOND = 1_700_000_000 * 1_000_000_000


def _set_mtime(path: Path, offset_ms: int) -> None:
    ns = SECOND + offset_ms * 1_000_000
    os.utime(path, ns=(ns, ns))


def _module(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A module imported once (its .pyc written), with the source's mtime at 100 ms into
    SECOND and the .pyc's at 200 ms: as if it was imported right after it was written."""
    source = tmp_path / f"{name}.py"
    source.write_text("VALUE = 1\n")
    _set_mtime(source, 100)
    assert _import_in_fresh_interpreter(tmp_path, name) == "1"
    pyc = Path(importlib.util.cache_from_source(str(source)))
    assert pyc.exists()
    _set_mtime(pyc, 200)
    return source, pyc


def _forget(tmp_path: Path, name: str) -> bool:
    sys.path.insert(0, str(tmp_path))
    try:
        return forget_stale_bytecode(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_a_same_size_edit_in_the_same_second_is_not_read_from_the_old_bytecode(tmp_path):
    source, pyc = _module(tmp_path, "samesecond")
    source.write_text("VALUE = 3\n")  # same length, 500 ms into the same second
    _set_mtime(source, 500)
    # What Python alone does: it trusts the old .pyc.
    assert _import_in_fresh_interpreter(tmp_path, "samesecond") == "1"
    _set_mtime(pyc, 200)  # (that import left it alone; set again for clarity)

    assert _forget(tmp_path, "samesecond") is True
    assert not pyc.exists()
    assert _import_in_fresh_interpreter(tmp_path, "samesecond") == "3"


def test_up_to_date_or_missing_bytecode_is_left_alone(tmp_path):
    source, pyc = _module(tmp_path, "fresh")
    assert _forget(tmp_path, "fresh") is False  # written after the source
    assert pyc.exists()
    source.write_text("VALUE = 22\n")  # another size: Python recompiles it by itself
    _set_mtime(source, 500)
    assert _forget(tmp_path, "fresh") is False
    assert pyc.exists()
    pyc.unlink()
    assert _forget(tmp_path, "fresh") is False  # nothing to forget
    assert _forget(tmp_path, "") is False
    assert _forget(tmp_path, "no_such_module_here") is False
