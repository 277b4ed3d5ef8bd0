"""The settings the HTTP core uses: a typed, frozen view of `Config`, read once per worker.

The registry (`django_prefork.conf.registry`) owns every default and validation rule; this
view only picks the values the core needs, so nothing here repeats a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django_prefork.conf.registry import SETTINGS_BY_NAME

if TYPE_CHECKING:
    from django_prefork.conf import Config


def _default(name: str) -> int:
    value: int = SETTINGS_BY_NAME[name].default
    return value


def _maximum(name: str) -> int:
    value: int = SETTINGS_BY_NAME[name].rule.hi  # type: ignore[attr-defined]
    return value


@dataclass(frozen=True)
class CoreSettings:
    """What `ServerContext` reads from the configuration (names as gunicorn's settings)."""

    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    limit_request_body: int
    header_timeout: float
    header_map: str
    forwarded_allow_ips: tuple[str, ...]
    secure_scheme_headers: tuple[tuple[str, str], ...]  # (header name, value meaning https)
    sendfile: bool = True  # False: never sendfile(2) (--no-sendfile)
    forwarder_headers: tuple[str, ...] = ()  # environ keys a trusted proxy may set
    casefold_http_method: bool = False  # gunicorn's leniencies, off as in gunicorn
    permit_obsolete_folding: bool = False
    strip_header_spaces: bool = False
    proxy_protocol: str = "off"  # http/proxy.py: off, v1, v2, auto
    proxy_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")

    @classmethod
    def from_config(cls, cfg: Config) -> CoreSettings:
        """The core's view of a validated `Config` (from `load_config`).

        0 for the header limits means what it means in gunicorn: `limit_request_fields` the
        maximum (32768), `limit_request_field_size` the default (8190; gunicorn sizes its
        head buffer with it). `limit_request_line` 0 stays unlimited (the head is capped).
        """
        return cls(
            limit_request_line=cfg.limit_request_line,
            limit_request_fields=(
                cfg.limit_request_fields or _maximum("limit_request_fields")
            ),
            limit_request_field_size=(
                cfg.limit_request_field_size or _default("limit_request_field_size")
            ),
            limit_request_body=cfg.limit_request_body,
            header_timeout=float(cfg.header_timeout),
            header_map=cfg.header_map,
            forwarded_allow_ips=tuple(cfg.forwarded_allow_ips),
            secure_scheme_headers=tuple(cfg.secure_scheme_headers.items()),
            sendfile=cfg.sendfile,
            forwarder_headers=tuple(cfg.forwarder_headers),
            casefold_http_method=cfg.casefold_http_method,
            permit_obsolete_folding=cfg.permit_obsolete_folding,
            strip_header_spaces=cfg.strip_header_spaces,
            proxy_protocol=cfg.proxy_protocol,
            proxy_allow_ips=tuple(cfg.proxy_allow_ips),
        )
