"""Settings whose PREFORK names an ssl_context hook, for the TLS tests."""

from testproject.settings import *  # noqa: F403

PREFORK = {"SSL_CONTEXT": "testproject.tls_hooks.tls13_only"}
