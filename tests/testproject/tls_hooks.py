"""An `ssl_context` hook for the TLS tests (gunicorn's signature): TLS 1.3 only."""

import ssl


def tls13_only(config, default_ssl_context_factory):
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def not_a_context(config, default_ssl_context_factory):
    return "nope"
