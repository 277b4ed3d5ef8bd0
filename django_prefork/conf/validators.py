"""Converters/validators for setting values.

Each rule is a callable ``rule(value, strings) -> converted`` that raises ``Invalid``.
``strings=True`` means the value came from the command line or the environment, where
everything is text, so ``"5"`` is converted; in ``PREFORK`` (Python code) types must already
be right, so ``"5"`` and ``"yes"`` are rejected instead of guessed at.
Each rule also has ``describe()`` for the docs.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from ..logsyslog import parse_syslog_address
from .binds import parse_bind

_INT_RE = re.compile(r"^[+-]?[0-9]{1,20}$")  # bounded: int() of huge text is slow


class Invalid(ValueError):
    """A rule rejected a value; the loader turns it into a one-line ``ConfigError``.

    ``to`` completes "Fix: set KEY to ..."; ``fix`` replaces the whole fix when the remedy is
    not a different value (e.g. installing a package); ``item`` is the bad list element.
    """

    def __init__(self, reason: str, *, to: str | None = None, fix: str | None = None,
                 item: Any = None, has_item: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.to = to
        self.fix = fix
        self.item = item
        self.has_item = has_item


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


class IntRule:
    """An integer in ``lo..hi`` (``hi`` None = unbounded)."""

    def __init__(self, lo: int, hi: int | None = None, hint: str | None = None) -> None:
        self.lo, self.hi, self.hint = lo, hi, hint

    def describe(self) -> str:
        if self.hi is None:
            return f"integer >= {self.lo}"
        return f"integer {self.lo}-{self.hi}"

    def _to(self) -> str:
        if self.hint:
            return self.hint
        if self.hi is None:
            return f"{self.lo} or more"
        return f"a number from {self.lo} to {self.hi}"

    def _in_range(self, value: int) -> bool:
        return value >= self.lo and (self.hi is None or value <= self.hi)

    def __call__(self, value: Any, strings: bool) -> int:
        if isinstance(value, bool):
            raise Invalid(f"must be an {self.describe()}, not a bool", to=self._to())
        if isinstance(value, str):
            text = value.strip()
            number = int(text) if _INT_RE.match(text) else None
            if not strings:
                ok = number is not None and self._in_range(number)
                raise Invalid(f"must be an {self.describe()}, not a string",
                              to=f"{number} without quotes" if ok else self._to())
            if number is None:
                raise Invalid(f"must be an {self.describe()}", to=self._to())
            value = number
        elif not isinstance(value, int):
            raise Invalid(f"must be an {self.describe()}, not {_type_name(value)}",
                          to=self._to())
        if not self._in_range(value):
            raise Invalid(f"must be an {self.describe()}", to=self._to())
        return int(value)


class UmaskRule:
    """A file-mode mask 0-0o777: an int, or text as gunicorn reads it (``int(text, 0)``,
    with a leading ``0`` meaning octal, so ``007``, ``0o117`` and ``0x3f`` all work).

    Text is accepted from ``PREFORK`` too: octal is the natural way to write a mask, and
    gunicorn config files commonly hold ``umask = "007"``.
    """

    TO = "an octal mask such as 0o117 (sockets 0660) or 0o007"

    def describe(self) -> str:
        return "integer 0-0o777 (octal text like 0o117 or 007 accepted)"

    def __call__(self, value: Any, strings: bool) -> int:
        if isinstance(value, bool):
            raise Invalid("must be a mask like 0o117, not a bool", to=self.TO)
        if isinstance(value, str):
            value = self._parse(value)
        elif not isinstance(value, int):
            raise Invalid(f"must be an integer mask, not {_type_name(value)}", to=self.TO)
        if not 0 <= value <= 0o777:
            raise Invalid(f"must be from 0 to 0o777, not {oct(value)}", to=self.TO)
        return int(value)

    def _parse(self, text: str) -> int:
        text = text.strip()
        if len(text) > 12:
            raise Invalid("is too long for a file-mode mask", to=self.TO)
        # gunicorn's auto_int: "0022" is octal (Python 3's int(x, 0) refuses a leading 0).
        if re.match(r"^0[0-9]", text):
            text = "0o" + text[1:]
        try:
            return int(text, 0)
        except ValueError:
            raise Invalid("is not a number (write octal as 0o117 or 0117)", to=self.TO) from None


class BoolRule:
    """A real bool; from the command line/environment also true/false, 1/0, yes/no, on/off."""

    TRUE = ("1", "true", "yes", "on")
    FALSE = ("0", "false", "no", "off")

    def describe(self) -> str:
        return "True or False"

    def __call__(self, value: Any, strings: bool) -> bool:
        if isinstance(value, bool):
            return value
        if strings and isinstance(value, str):
            text = value.strip().lower()
            if text in self.TRUE:
                return True
            if text in self.FALSE:
                return False
            raise Invalid("must be true or false", to="true or false")
        if isinstance(value, str):
            raise Invalid("must be True or False (a bool), not a string", to="True or False")
        raise Invalid(f"must be True or False, not {_type_name(value)}", to="True or False")


class ChoiceRule:
    """One of fixed words, compared case-insensitively and stored lower case."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, value: Any, strings: bool) -> str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, not {_type_name(value)}", to=self.describe())
        text = value.strip().lower()
        if text not in self.choices:
            raise Invalid(f"must be {self.describe()}", to=self.describe())
        return text


class WorkerClassRule(ChoiceRule):
    """A worker class name; ``gevent`` also needs the gevent package (found, not imported)."""

    def __call__(self, value: Any, strings: bool) -> str:
        name = super().__call__(value, strings)
        if name == "gevent" and importlib.util.find_spec("gevent") is None:
            raise Invalid(
                "the gevent worker needs the gevent package, which is not installed",
                fix='pip install "django-prefork[gevent]" (or choose the gthread worker)',
            )
        return name


class StrRule:
    """A string; ``optional`` also allows None (and treats an empty string as None)."""

    def __init__(self, optional: bool = False, hint: str = "a string") -> None:
        self.optional, self.hint = optional, hint

    def describe(self) -> str:
        return "string or None" if self.optional else "string"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            kind = "a string or None" if self.optional else "a string"
            raise Invalid(f"must be {kind}, not {_type_name(value)}", to=self.hint)
        if self.optional and not value.strip():
            return None
        return value


def _str_list(value: Any, what: str, to: str) -> list[str]:
    """A list of str from a list/tuple of str or one comma-separated str."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str):
                raise Invalid(f"every {what} must be a string, not {_type_name(item)}",
                              to=to, item=item, has_item=True)
        return [item.strip() for item in value]
    raise Invalid(f"must be a string or a list of strings, not {_type_name(value)}", to=to)


class BindRule:
    """One or more bind specs (a str or list of str), stored canonical, no duplicates."""

    TO = "a value like 127.0.0.1:8000, [::1]:8000, unix:/run/app.sock or fd://3"

    def describe(self) -> str:
        return "address or list of addresses"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        if isinstance(value, str):
            items: list[Any] = [value]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise Invalid(f"must be a string or a list of strings, not {_type_name(value)}",
                          to=self.TO)
        if not items:
            raise Invalid("must list at least one address", to=self.TO)
        out: list[str] = []
        for item in items:
            try:
                canonical = str(parse_bind(item))
            except ValueError as exc:
                raise Invalid(str(exc), to=self.TO, item=item, has_item=True) from None
            if canonical in out:
                raise Invalid(f"lists {canonical} twice", to="each address once",
                              item=item, has_item=True)
            out.append(canonical)
        return out


class ForwardedIpsRule:
    """``*`` or IP addresses / CIDR networks, as a list or a comma-separated string."""

    TO = "IP addresses or networks like 127.0.0.1,10.0.0.0/8 (or * to trust every client)"

    def describe(self) -> str:
        return "list of IPs/networks or '*'"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        items = _str_list(value, "address", self.TO)
        for item in items:
            if item == "*":
                continue
            try:
                if "/" in item:
                    ipaddress.ip_network(item, strict=False)
                else:
                    ipaddress.ip_address(item)
            except ValueError:
                raise Invalid(f"{item!r} is not an IP address, a network or '*'",
                              to=self.TO, item=item, has_item=True) from None
        return items


class HeadersRule:
    """A dict of header name -> value; names stored upper case (matched case-insensitively)."""

    TO = '{"X-FORWARDED-PROTO": "https"} (or {} to trust no header)'

    def describe(self) -> str:
        return "dict of header -> value"

    def __call__(self, value: Any, strings: bool) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise Invalid(f"must be a dict, not {_type_name(value)}", to=self.TO)
        out: dict[str, str] = {}
        for name, val in value.items():
            if not isinstance(name, str) or not name.strip():
                raise Invalid(f"header names must be non-empty strings, not {name!r}",
                              to=self.TO)
            if not isinstance(val, str):
                raise Invalid(f"the value for {name!r} must be a string, not "
                              f"{_type_name(val)}", to=self.TO)
            out[name.strip().upper()] = val
        return out


class TcpAddressRule:
    """One TCP ``HOST:PORT`` (port 0 allowed) or None: the metrics endpoint's address.

    Parsed like ``--bind`` (same messages); unix sockets and inherited fds are refused,
    since a Prometheus scraper or a Kubernetes probe speaks TCP.
    """

    TO = "an address like 127.0.0.1:9100 or [::1]:9100 (or leave it unset)"

    def describe(self) -> str:
        return "HOST:PORT or None"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise Invalid(f"must be a string or None, not {_type_name(value)}", to=self.TO)
        try:
            spec = parse_bind(value)
        except ValueError as exc:
            raise Invalid(str(exc), to=self.TO) from None
        if spec.kind != "tcp":
            raise Invalid(f"{value!r} is not a TCP address", to=self.TO)
        return str(spec)


class StatsdHostRule:
    """Where StatsD datagrams go: ``HOST:PORT`` (UDP) or ``unix:PATH`` (a datagram socket),
    as gunicorn's ``--statsd-host``; None = off."""

    TO = "an address like localhost:8125 or unix:/run/statsd.sock (or leave it unset)"

    def describe(self) -> str:
        return "HOST:PORT, unix:PATH or None"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise Invalid(f"must be a string or None, not {_type_name(value)}", to=self.TO)
        text = value.strip()
        if text.startswith("unix:"):
            path = text[len("unix:"):]
            if not path or "\0" in path:
                raise Invalid(f"{value!r} has no usable unix socket path", to=self.TO)
            return text
        has_port = "]:" in text if text.startswith("[") else text.count(":") == 1
        if not has_port:
            raise Invalid(f"{value!r} has no port (StatsD listens on 8125 by default)",
                          to=self.TO)
        try:
            spec = parse_bind(text)
        except ValueError as exc:
            raise Invalid(str(exc).replace("bind address", "StatsD address"),
                          to=self.TO) from None
        if spec.kind != "tcp" or spec.port == 0:
            raise Invalid(f"{value!r} is not a HOST:PORT address with a port above 0",
                          to=self.TO)
        return str(spec)


class ConfigPathRule:
    """The path of a gunicorn-style Python config file, stored absolute (None = no file).

    Absolute, so a re-read after ``chdir`` (a HUP re-reads in a fresh interpreter) finds
    the same file. Whether it exists is checked when it is read, with the file's error.
    """

    TO = "the path of a Python file such as gunicorn.conf.py (or leave it unset)"

    def describe(self) -> str:
        return "file path or None"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise Invalid(f"must be a file path, not {_type_name(value)}", to=self.TO)
        text = os.fspath(value)
        if "\0" in text:
            raise Invalid("must not contain a NUL byte", to=self.TO)
        return os.path.abspath(text)


class RawEnvRule:
    """``KEY=VALUE`` strings (gunicorn's ``raw_env``), as a list or a dict; stored as a list."""

    TO = "KEY=VALUE text such as DJANGO_DEBUG=0"

    def describe(self) -> str:
        return "list of KEY=VALUE strings"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        if isinstance(value, Mapping):
            value = [f"{k}={v}" for k, v in value.items()]
        elif isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"must be a list of KEY=VALUE strings, not {_type_name(value)}",
                          to=self.TO)
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise Invalid(f"every entry must be a KEY=VALUE string, not "
                              f"{_type_name(item)}", to=self.TO, item=item, has_item=True)
            key, sep, _ = item.partition("=")
            if not sep or not key.strip() or "\0" in item:
                raise Invalid(f"{item!r} is not KEY=VALUE", to=self.TO, item=item,
                              has_item=True)
            out.append(item)
        return out


class FilePatternsRule:
    """File paths or glob patterns (``--reload-extra-file``): one string or a list."""

    TO = "a file path or a glob pattern such as 'config/*.yaml'"

    def describe(self) -> str:
        return "list of file paths or glob patterns"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"must be a list of file paths or patterns, not {_type_name(value)}",
                          to=self.TO)
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item.strip() or "\0" in item:
                raise Invalid(f"{item!r} is not a file path or pattern", to=self.TO,
                              item=item, has_item=True)
            out.append(item)
        return out


class DirectoryRule:
    """An existing directory (``chdir``), stored absolute; None = stay where we started."""

    TO = "an existing directory (or leave it unset)"

    def describe(self) -> str:
        return "existing directory or None"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise Invalid(f"must be a directory path, not {_type_name(value)}", to=self.TO)
        path = os.path.abspath(os.fspath(value))
        if not os.path.isdir(path):
            raise Invalid(f"{path} is not an existing directory", to=self.TO)
        return path


class PathListRule:
    """Directories for sys.path: a comma-separated string (gunicorn's form) or a list."""

    TO = "comma-separated directories such as /srv/app,/srv/lib"

    def describe(self) -> str:
        return "comma-separated directories, or a list"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        if value is None:
            return []
        items = _str_list(value, "directory", self.TO)
        return [os.path.abspath(item) for item in items if item]


class HeaderNamesRule:
    """Header names as gunicorn writes them for ``forwarder_headers`` (e.g. SCRIPT_NAME),
    comma-separated or a list; stored upper case."""

    TO = "names such as SCRIPT_NAME,PATH_INFO (or an empty list)"

    def describe(self) -> str:
        return "comma-separated header names, or a list"

    def __call__(self, value: Any, strings: bool) -> list[str]:
        items = _str_list(value, "header name", self.TO)
        out: list[str] = []
        for item in items:
            # environ-style names (SCRIPT_NAME): a "-" name is an ordinary HTTP_ header
            if not item or not re.fullmatch(r"[A-Za-z0-9_]+", item):
                raise Invalid(f"{item!r} is not a header name", to=self.TO, item=item,
                              has_item=True)
            out.append(item.upper())
        return out
# -- PROXY protocol and TLS (docs/tls.md) ---------------------------------------------------

class ProxyProtocolRule(ChoiceRule):
    """off, v1, v2 or auto; True/False as older gunicorn configs write it (auto/off)."""

    def __init__(self) -> None:
        super().__init__(("off", "v1", "v2", "auto"))

    def __call__(self, value: Any, strings: bool) -> str:
        if value is True:
            return "auto"
        if value is False or value is None:
            return "off"
        return super().__call__(value, strings)


class CertReqsRule(IntRule):
    """ssl.CERT_NONE (0), CERT_OPTIONAL (1) or CERT_REQUIRED (2), as gunicorn's cert_reqs."""

    def __init__(self) -> None:
        super().__init__(0, 2, hint="0 (no client certificate), 1 (optional) or 2 (required)")


#: ssl_version values accepted (gunicorn's are ssl.PROTOCOL_* names or numbers): each maps to
#: the lowest TLS version the server offers (None: the default, TLS 1.2).
SSL_VERSIONS: dict[str, str | None] = {
    "TLS": None, "TLS_SERVER": None, "SSLV23": None, "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3",
}
_SSL_VERSION_NUMBERS = {2: "TLS", 17: "TLS_SERVER", 5: "TLSV1_2"}


class SslVersionRule:
    """Deprecated in gunicorn; accepted for its configs, stored as a name from SSL_VERSIONS."""

    TO = ("TLS (the default: TLS 1.2 or newer) or TLSv1_3; set ciphers or the ssl_context "
          "hook for more")

    def describe(self) -> str:
        return "TLS, TLS_SERVER, SSLv23, TLSv1_2 or TLSv1_3 (deprecated, as in gunicorn)"

    def __call__(self, value: Any, strings: bool) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in _SSL_VERSION_NUMBERS:
                raise Invalid("names a protocol older than TLS 1.2 or not known", to=self.TO)
            return _SSL_VERSION_NUMBERS[value]
        if not isinstance(value, str):
            raise Invalid(f"must be a protocol name, not {_type_name(value)}", to=self.TO)
        text = value.strip().upper().removeprefix("PROTOCOL_")
        if text.isdigit():
            return self(int(text), strings)
        if text not in SSL_VERSIONS:
            raise Invalid("names a protocol older than TLS 1.2 or not known", to=self.TO)
        return text


class DottedPathRule(StrRule):
    """A dotted path to a callable (``myproject.tls.make_context``); imported at start-up."""

    def __init__(self) -> None:
        super().__init__(optional=True, hint="a dotted path like myproject.hooks.ssl_context")

    def __call__(self, value: Any, strings: bool) -> str | None:
        text = super().__call__(value, strings)
        if text is None:
            return None
        text = text.strip()
        parts = text.split(".")
        if len(parts) < 2 or not all(part.isidentifier() for part in parts):
            raise Invalid("must be a dotted path to a function (module.name)", to=self.hint)
        return text
# --- logging: logconfig_dict, syslog_addr (issue 12 item 7) --------------------------------

class LogConfigDictRule:
    """A ``logging.config.dictConfig`` dictionary, as gunicorn's ``logconfig_dict``.

    From the command line or the environment it is JSON text. It must hold JSON values only
    (classes as dotted-path strings, e.g. ``"()": "myproject.logs.Filter"``), because the
    config travels to fresh worker interpreters as JSON.
    """

    TO = ('a dictConfig dict such as {"loggers": {"django_prefork.error": {"level": '
          '"DEBUG"}}} (or {} for none)')
    SECTIONS = ("formatters", "filters", "handlers", "loggers", "root")

    def describe(self) -> str:
        return "dictConfig dict (JSON text on the command line)"

    def __call__(self, value: Any, strings: bool) -> dict[str, Any]:
        if strings and isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise Invalid(f"is not valid JSON ({exc})", to=self.TO) from None
        if not isinstance(value, Mapping):
            raise Invalid(f"must be a dict, not {_type_name(value)}", to=self.TO)
        try:
            plain = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise Invalid(f"must hold only JSON values ({exc}); name classes and callables "
                          "by dotted-path strings", to=self.TO) from None
        if not isinstance(plain, dict):  # a Mapping json turned into something else
            raise Invalid("must be a dict with string keys", to=self.TO)
        if plain.get("version", 1) != 1:
            raise Invalid(f"has version {plain['version']!r}; dictConfig knows only 1",
                          to=self.TO)
        if plain.get("incremental"):
            raise Invalid("sets incremental, which is not supported", to=self.TO)
        for section in self.SECTIONS:
            if section in plain and not isinstance(plain[section], dict):
                raise Invalid(f"has {section!r} that is not a dict", to=self.TO)
        return plain


class SyslogAddressRule:
    """gunicorn's ``--log-syslog-to`` forms: ``unix://PATH[#dgram|#stream]``,
    ``udp://HOST:PORT``, ``tcp://HOST:PORT``."""

    TO = "an address like udp://localhost:514, tcp://10.0.0.5:514 or unix:///dev/log#dgram"

    def describe(self) -> str:
        return "unix://PATH[#dgram|#stream], udp://HOST:PORT or tcp://HOST:PORT"

    def __call__(self, value: Any, strings: bool) -> str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, not {_type_name(value)}", to=self.TO)
        try:
            parse_syslog_address(value)
        except ValueError as exc:
            raise Invalid(str(exc), to=self.TO) from None
        return value.strip()


class _AccountRule:
    """A user or a group: a name, looked up now, or a numeric id; stored as the numeric id
    (gunicorn's ``uid``/``gid``), so a worker that rebuilds the config needs no lookup.
    None = the current user or group (gunicorn's default)."""

    kind = ""
    listing = ""

    def describe(self) -> str:
        return f"{self.kind} name, numeric id, or None (this process's)"

    def _to(self) -> str:
        return f"an existing {self.kind} name or a numeric id ({self.listing} lists them)"

    def _lookup(self, name: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, value: Any, strings: bool) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise Invalid(f"must be a {self.kind} name or a numeric id, not "
                          f"{_type_name(value)}", to=self._to())
        if isinstance(value, str):
            text = value.strip()
            if not text.isdigit():
                try:
                    return self._lookup(text)
                except KeyError:
                    raise Invalid(f"there is no {self.kind} named {text!r} on this machine",
                                  to=self._to()) from None
            if len(text) > 10:
                raise Invalid(f"is too large for a {self.kind} id", to=self._to())
            value = int(text)
        if not 0 <= value < 2**32 - 1:  # (uid_t)-1 means "unchanged" to the kernel
            raise Invalid(f"must be from 0 to {2**32 - 2}", to=self._to())
        return int(value)


class UserRule(_AccountRule):
    kind = "user"
    listing = "getent passwd"

    def _lookup(self, name: str) -> int:
        import pwd

        return pwd.getpwnam(name).pw_uid


class GroupRule(_AccountRule):
    kind = "group"
    listing = "getent group"

    def _lookup(self, name: str) -> int:
        import grp

        return grp.getgrnam(name).gr_gid


class TmpDirRule(DirectoryRule):
    """An existing directory for the heartbeat files; None = /dev/shm when writable, else
    the system's temp dir. (That the master can write there is a start-up check: a worker
    that rebuilds the config may be another user.)"""

    TO = "an existing directory such as /dev/shm (or leave it unset)"

    def describe(self) -> str:
        return "existing directory or None (/dev/shm, else the temp dir)"
