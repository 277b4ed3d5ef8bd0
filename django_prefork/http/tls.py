"""TLS on the server side, with the stdlib `ssl` module: the context, the wrap, the handshake.

The context is built from gunicorn's settings (certfile, keyfile, ca_certs, cert_reqs,
ciphers, ssl_version) or by the `ssl_context(config, default_ssl_context_factory)` hook, as
gunicorn defines it. `load_server_tls` is called by every worker when it boots (so a HUP's
new generation reads the files again) and by the master before it serves (`tls_problem`: a
bad certificate or key is one line and a non-zero exit, not workers failing one by one).

Each worker class wraps an accepted socket (`ServerTLS.wrap`) where it hands the connection
to the HTTP core, and schedules the handshake its own way (docs/tls.md): `handshake()` blocks
(sync) or yields to the hub (gevent) within `header_timeout`; gthread's poller drives
`handshake_step()` on readiness, so no thread ever waits for a ClientHello.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable
from typing import Any

#: What `handshake_step` says it waits for.
DONE, WANT_READ, WANT_WRITE = 0, 1, 2

_MINIMUM_VERSIONS = {"TLSV1_3": ssl.TLSVersion.TLSv1_3}


class TLSConfigError(Exception):
    """A TLS setting that cannot be used: one line naming the setting, the value, the fix."""


class ServerTLS:
    """The server's context and how sockets are wrapped with it (one per worker)."""

    __slots__ = ("context", "suppress_ragged_eofs")

    def __init__(self, context: ssl.SSLContext, suppress_ragged_eofs: bool) -> None:
        self.context = context
        self.suppress_ragged_eofs = suppress_ragged_eofs

    def wrap(self, sock: Any) -> Any:
        """An accepted socket as a TLS socket whose handshake is still to do: the worker
        class drives it (never inside accept, never holding a thread)."""
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False,
            suppress_ragged_eofs=self.suppress_ragged_eofs,
        )  # fmt: skip


def tls_enabled(cfg: Any) -> bool:
    """TLS is on when a certificate is configured (gunicorn's `is_ssl`)."""
    return bool(cfg.certfile)


def default_context(cfg: Any) -> ssl.SSLContext:
    """The context from the settings. TLS 1.2 is the lowest version offered; ssl_version
    (deprecated in gunicorn, validated in conf/validators.py) may only raise it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MINIMUM_VERSIONS.get(cfg.ssl_version or "",
                                                    ssl.TLSVersion.TLSv1_2)
    _load(lambda: context.load_cert_chain(cfg.certfile, cfg.keyfile or None),
          "--certfile (CERTFILE)" if not cfg.keyfile else "--certfile/--keyfile (CERTFILE, "
          "KEYFILE)", cfg.certfile if not cfg.keyfile else f"{cfg.certfile}, {cfg.keyfile}",
          "a PEM certificate and its matching private key, readable by this user")
    context.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
    if cfg.ca_certs:
        _load(lambda: context.load_verify_locations(cafile=cfg.ca_certs),
              "--ca-certs (CA_CERTS)", cfg.ca_certs, "a readable PEM file of CA certificates")
    elif cfg.cert_reqs:  # as gunicorn's default context: the system's CAs
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    if cfg.ciphers:
        _load(lambda: context.set_ciphers(cfg.ciphers), "--ciphers (CIPHERS)", cfg.ciphers,
              "an OpenSSL cipher list such as ECDHE+AESGCM")
    return context


def _load(step: Callable[[], object], setting: str, value: str, fix: str) -> None:
    try:
        step()
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise TLSConfigError(f"{setting} {value!r} cannot be used: {reason}. Fix: give {fix}."
                             ) from None


def load_server_tls(cfg: Any) -> ServerTLS | None:
    """The server's TLS, read from the files now (None when TLS is off).

    With the `ssl_context` hook (a dotted path), gunicorn's contract: the hook gets the
    config and a factory of the default context, and returns the context to use.
    """
    if not tls_enabled(cfg):
        return None
    hook_path = cfg.ssl_context
    # A `-c` gunicorn.conf.py defines the hook as a function (cfg.hooks); PREFORK names it
    # by a dotted path. The file wins, as for every other hook (docs/hooks.md).
    file_hook = cfg.hooks.get("ssl_context")
    if hook_path or file_hook:
        hook = file_hook or _import_hook(hook_path)
        hook_path = hook_path or "ssl_context in the config file"

        def factory() -> ssl.SSLContext:
            return default_context(cfg)

        try:
            context = hook(cfg, factory)
        except TLSConfigError:
            raise
        except Exception as exc:
            raise TLSConfigError(f"SSL_CONTEXT {hook_path!r} raised {type(exc).__name__}: "
                                 f"{exc}. Fix: make the hook return an ssl.SSLContext.") from None
        if not isinstance(context, ssl.SSLContext):
            raise TLSConfigError(f"SSL_CONTEXT {hook_path!r} returned "
                                 f"{type(context).__name__}, not an ssl.SSLContext. Fix: "
                                 "return default_ssl_context_factory() or a context of yours.")
    else:
        context = default_context(cfg)
    return ServerTLS(context, bool(cfg.suppress_ragged_eofs))


def _import_hook(path: str) -> Callable[..., Any]:
    module_name, _, name = path.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise TLSConfigError(f"SSL_CONTEXT {path!r} cannot be imported: {exc}. Fix: give the "
                             "dotted path of a function ssl_context(config, "
                             "default_ssl_context_factory).") from None
    if not callable(hook):
        raise TLSConfigError(f"SSL_CONTEXT {path!r} is not callable. Fix: name a function.")
    return hook  # type: ignore[no-any-return]


def tls_problem(cfg: Any) -> str | None:
    """Why the TLS settings cannot serve, in one line (None: fine or TLS off). The master
    calls it before serving, and before a reload that would make workers read them again."""
    try:
        load_server_tls(cfg)
    except TLSConfigError as exc:
        return str(exc)
    return None


def secure(tls: ServerTLS, sock: Any, timeout: float) -> Any:
    """`sock` wrapped and its handshake done within `timeout` (sync, gevent); None if that
    failed, and the socket is closed."""
    try:
        wrapped = tls.wrap(sock)
    except (OSError, ValueError):
        sock.close()
        return None
    if not handshake(wrapped, timeout):
        wrapped.close()
        return None
    return wrapped


def handshake(sock: Any, timeout: float) -> bool:
    """The whole handshake, blocking (sync) or cooperatively (gevent), within `timeout`:
    a client that never sends its ClientHello is dropped like a slow request head. False if
    it failed (the caller closes the socket)."""
    previous = sock.gettimeout()
    try:
        sock.settimeout(timeout)
        sock.do_handshake()
        sock.settimeout(previous)
    except (OSError, ValueError):  # ssl.SSLError, a timeout, a reset
        return False
    return True


def handshake_step(sock: Any) -> int:
    """One non-blocking step of the handshake: DONE, or what to wait for. Raises OSError
    (ssl.SSLError) when it failed."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return WANT_READ
    except ssl.SSLWantWriteError:
        return WANT_WRITE
    return DONE
