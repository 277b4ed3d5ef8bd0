"""Start a fresh interpreter that inherits chosen descriptors (workers, zygotes)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def spawn_interpreter(module: str, env_var: str, spec: dict[str, Any],
                      inherited_fds: list[int]) -> int:
    """Run `python -m module` with spec as JSON in env_var; return its pid.

    fork + execve rather than subprocess: the master reaps its children itself with
    waitpid(-1), which a Popen object would race with.
    """
    env = dict(os.environ)
    env[env_var] = json.dumps(spec)
    argv = [sys.executable, "-m", module]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child until exec
        try:
            for fd in inherited_fds:
                os.set_inheritable(fd, True)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    return pid
