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
import os
import signal
import sys
from types import FrameType


def main() -> None:
    port, workers, module = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    import bjoern  # type: ignore[import-not-found, unused-ignore]

    app = importlib.import_module(module).application
    bjoern.listen(app, "127.0.0.1", port)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            bjoern.run()
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"bjoern: {workers} workers on 127.0.0.1:{port}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
