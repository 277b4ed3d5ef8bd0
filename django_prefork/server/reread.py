"""Re-read the settings in a fresh interpreter for a HUP, and print the resolved config.

The master's own interpreter holds the settings module it started with; importing it again
there would not see the file's new contents. Exit status 2 with one line on stderr means the
new settings are invalid and the master keeps its running configuration.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    sys.path[:] = json.loads(os.environ.pop("DJANGO_PREFORK_SYS_PATH", "[]")) or sys.path
    cli = json.loads(os.environ.pop("DJANGO_PREFORK_CLI", "{}"))
    from django.conf import settings

    from django_prefork.conf import ConfigError, load_config
    from django_prefork.http.tls import tls_problem

    try:
        prefork = getattr(settings, "PREFORK", {})
        cfg = load_config(prefork=prefork, environ=os.environ, cli=cli)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except Exception as exc:  # an error in settings.py itself
        sys.stderr.write(f"cannot load settings: {type(exc).__name__}: {exc}\n")
        return 2
    problem = tls_problem(cfg)  # the new generation reads the certificate files again
    if problem:
        sys.stderr.write(f"{problem}\n")
        return 2
    json.dump(cfg.to_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
