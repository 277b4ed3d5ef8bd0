"""What ``raw_env``, ``chdir`` and ``pythonpath`` do to the master before workers start.

gunicorn applies them while it reads its config, before it imports the app. Here
``manage.py`` has imported Django's settings already, so they reach what comes after:
the master from this point, every worker (forked, or a fresh interpreter, which inherits
the environment, the working directory and the master's sys.path) and the app they load.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["apply_process_settings"]


def apply_process_settings(cfg: Any) -> None:
    """Set ``raw_env`` in os.environ, change to ``chdir``, put ``pythonpath`` first on
    sys.path (in the order given); idempotent, so a re-run after a reload is harmless."""
    for item in cfg.raw_env:
        key, _, value = item.partition("=")
        os.environ[key.strip()] = value
    if cfg.chdir:
        os.chdir(cfg.chdir)
    for directory in reversed(cfg.pythonpath):
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)
