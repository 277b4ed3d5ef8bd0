"""Settings with a PREFORK dict, for the precedence tests."""

from testproject.settings import *  # noqa: F403

PREFORK = {
    "WORKERS": 2,
    "TIMEOUT": 17,
    "KEEPALIVE": 3,
    "BIND": "127.0.0.1:0",
}
