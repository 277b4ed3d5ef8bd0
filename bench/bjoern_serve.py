"""bjoern, the C ceiling of bench/run.py (`--anchors granian,uwsgi,bjoern`).

bjoern is a WSGI server written in C on libev: one thread per process, keep-alive, its own
HTTP parser, nothing between two system calls but the app. It has no command line and no
process manager, so this launcher binds, loads the app once and forks the workers, as
uWSGI's master does. It has none of runprefork's policy (limits, timeouts, drain), which is
what makes it the ceiling a compiled request loop could approach, not an anchor to beat.

    python bench/bjoern_serve.py PORT WORKERS MODULE
"""

from __future__ import annotations

import importlib
import sys

from lean_loop import run_forked


def main() -> None:
    port, workers, module = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    import bjoern  # type: ignore[import-not-found, unused-ignore]

    bjoern.listen(importlib.import_module(module).application, "127.0.0.1", port)
    run_forked(workers, bjoern.run, f"bjoern: {workers} workers on 127.0.0.1:{port}")


if __name__ == "__main__":
    main()
