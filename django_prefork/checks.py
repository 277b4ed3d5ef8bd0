"""System checks for the mistakes people make when they leave runserver for a real server.

Design (see docs/checks.md):

* ``E001`` (PREFORK validation), ``W009`` (ignored storage settings) and ``W010`` (gevent
  with persistent DB connections) are ordinary checks: they run with every ``manage.py
  check``, ``runserver``, ``migrate`` and test run.
* The static- and media-file checks depend on ``DEBUG = False`` and on the deployed file
  system, so they are deployment checks: ``manage.py check --deploy`` runs them, Django's
  test runner does not.
* Serving needs them too, in the same single pass as the ordinary checks (one summary, as
  runserver prints): each is registered a second time as an ordinary check that answers only
  inside :func:`serving`, under :data:`TAG_STARTUP`. ``W001`` (DEBUG = True) is such a check
  only: Django's own ``security.W018`` already covers ``check --deploy``.

``runprefork`` runs ``self.check()`` once inside :func:`serving` (or just calls
:func:`run_startup_checks` for the serving-only ones).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

#: Where each check's long explanation lives: the docs page in the source repository (and
#: in the sdist). There is no docs site, so the hints name the file and its section.
DOCS_PAGE = "docs/checks.md"

#: PREFORK setting validation (ordinary check).
TAG_SETTINGS = "prefork_settings"
#: Every static-files check (``manage.py check --deploy --tag prefork_static``).
TAG_STATIC = "prefork_static"
#: The media-files check (``manage.py check --deploy --tag prefork_media``).
TAG_MEDIA = "prefork_media"
#: Django settings that disagree with the server's (``check --deploy --tag prefork_server``).
TAG_SERVER = "prefork_server"
#: Checks that answer only while runprefork starts up (inside serving()).
TAG_STARTUP = "prefork_startup"
STARTUP_TAGS = (TAG_STARTUP,)
STARTUP_CHECK_TAGS = STARTUP_TAGS  # the name runprefork imports

#: Top-level Django setting: something other than this process serves STATIC_URL (and,
#: unless MEDIA_SERVED_BY_SETTING says otherwise, MEDIA_URL).
SERVED_BY_SETTING = "PREFORK_STATIC_SERVED_BY"
#: Top-level Django setting: something other than this process serves MEDIA_URL.
MEDIA_SERVED_BY_SETTING = "PREFORK_MEDIA_SERVED_BY"

SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"
STATIC_MIDDLEWARE = {
    "whitenoise.middleware.WhiteNoiseMiddleware": "whitenoise",
    "servestatic.middleware.ServeStaticMiddleware": "servestatic",
}
# Class names (with their top-level package) we recognise in a subclass's MRO.
_STATIC_MIDDLEWARE_CLASSES = {
    ("whitenoise", "WhiteNoiseMiddleware"): "whitenoise",
    ("servestatic", "ServeStaticMiddleware"): "servestatic",
}
_STATIC_WSGI_CLASSES = {("whitenoise", "WhiteNoise"), ("servestatic", "ServeStatic")}
_STATIC_WSGI_SOURCE = re.compile(r"\b(?:WhiteNoise|ServeStatic)\s*\(")
# Middleware that their own documentation wants above WhiteNoise/ServeStatic.
ALLOWED_ABOVE_STATIC = frozenset({
    SECURITY_MIDDLEWARE,
    "corsheaders.middleware.CorsMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
})
# Middleware that answers (or caches) a request before the next one runs.
EARLY_RESPONSE_MIDDLEWARE = {
    "django.middleware.common.CommonMiddleware":
        "redirects for PREPEND_WWW and rejects DISALLOWED_USER_AGENTS",
    "django.middleware.cache.CacheMiddleware": "answers from, and fills, the cache",
    "django.middleware.cache.FetchFromCacheMiddleware": "answers from the cache",
    "django.middleware.cache.UpdateCacheMiddleware": "copies every static response into the cache",
    "maintenance_mode.middleware.MaintenanceModeMiddleware": "answers 503 in maintenance mode",
}
_SETTINGS_IGNORED_SINCE_51 = ("STATICFILES_STORAGE", "DEFAULT_FILE_STORAGE")


def docs_reference(check_id: str) -> str:
    """``docs/checks.md#w002`` for ``django_prefork.W002``: the section explaining it."""
    return f"{DOCS_PAGE}#{check_id.rsplit('.', 1)[-1].lower()}"


def _hint(text: str, check_id: str) -> str:
    """Append the docs reference so every message says where the long explanation lives."""
    return f"{text} See django-prefork's {docs_reference(check_id)}"


# --- serving state -------------------------------------------------------------------------

class _Serving:
    """What runprefork told us about the process that is about to serve."""

    def __init__(self, app: Any = None, cfg: Any = None) -> None:
        self.app = app
        self.cfg = cfg


_serving: _Serving | None = None


@contextmanager
def serving(app: Any = None, cfg: Any = None) -> Iterator[None]:
    """Run checks as runprefork's start-up: enables the serving-only checks.

    ``app`` is the WSGI application when it is already loaded (``--preload``); without it the
    checks look at ``WSGI_APPLICATION`` without importing the project's WSGI module. ``cfg``
    is the resolved server Config (command line included), when it could be loaded.
    """
    global _serving
    previous, _serving = _serving, _Serving(app, cfg)
    try:
        yield
    finally:
        _serving = previous


def run_startup_checks(app: Any = None, cfg: Any = None) -> list[CheckMessage]:
    """The checks runprefork adds at start-up (static and media files, DEBUG), as messages."""
    with serving(app, cfg):
        return list(checks.run_checks(tags=list(STARTUP_TAGS)))


def _only_while_serving(check: Any) -> Any:
    """The same check as an ordinary one that answers only inside serving()."""
    def while_serving(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
        if _serving is None:
            return []
        result: list[CheckMessage] = check(app_configs, **kwargs)
        return result

    while_serving.__name__ = f"{check.__name__}_while_serving"
    while_serving.__doc__ = check.__doc__
    return while_serving


# --- PREFORK -------------------------------------------------------------------------------

def check_prefork_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001: every problem validate_prefork finds in settings.PREFORK, one Error each."""
    from django_prefork.conf import validate_prefork

    prefork = getattr(settings, "PREFORK", None)
    hint = _hint("Every PREFORK key, its type and range are listed in docs/settings.md.",
                 "django_prefork.E001")
    return [
        Error(str(err), hint=hint, obj="settings.PREFORK", id="django_prefork.E001")
        for err in validate_prefork(prefork)
    ]


# --- helpers for the static-file checks ----------------------------------------------------

def _staticfiles_installed() -> bool:
    return bool(apps.is_installed("django.contrib.staticfiles"))


def _static_url_is_local() -> bool:
    url = getattr(settings, "STATIC_URL", None)
    if not url:
        return False
    parts = urlsplit(str(url))
    return not parts.scheme and not parts.netloc


def _served_externally() -> bool:
    return bool(getattr(settings, SERVED_BY_SETTING, None))


@functools.lru_cache(maxsize=256)
def _middleware_kind(path: str) -> str | None:
    """'whitenoise'/'servestatic' if ``path`` names their middleware or a subclass of it."""
    if path in STATIC_MIDDLEWARE:
        return STATIC_MIDDLEWARE[path]
    if path.startswith("django."):
        return None
    try:
        cls = import_string(path)
    except Exception:  # a broken MIDDLEWARE entry is reported when Django loads it
        return None
    for klass in getattr(cls, "__mro__", ()):
        key = (klass.__module__.split(".", 1)[0], klass.__name__)
        if key in _STATIC_MIDDLEWARE_CLASSES:
            return _STATIC_MIDDLEWARE_CLASSES[key]
    return None


def _static_middleware() -> tuple[int, str, str] | None:
    """(index, path, kind) of the first static-file middleware in MIDDLEWARE, if any."""
    for index, path in enumerate(getattr(settings, "MIDDLEWARE", None) or ()):
        kind = _middleware_kind(str(path))
        if kind:
            return index, str(path), kind
    return None


def _is_static_wrapper(app: Any) -> bool:
    """True if ``app`` (or an app it wraps, a few levels deep) is a WhiteNoise/ServeStatic."""
    for _ in range(5):
        if app is None:
            return False
        for klass in type(app).__mro__:
            if (klass.__module__.split(".", 1)[0], klass.__name__) in _STATIC_WSGI_CLASSES:
                return True
        app = getattr(app, "application", None) or getattr(app, "app", None)
    return False


def _wsgi_serves_static() -> bool:
    """Whether WSGI_APPLICATION is wrapped in WhiteNoise/ServeStatic.

    Importing the WSGI module can be costly or have side effects (APM agents, Sentry), so we
    only inspect an object that is already loaded; otherwise we read the module's source.
    """
    if _serving is not None and _serving.app is not None:
        return _is_static_wrapper(_serving.app)
    path = getattr(settings, "WSGI_APPLICATION", None)
    if not path:
        return False
    module_name, _, attr = str(path).rpartition(".")
    module = sys.modules.get(module_name)
    if module is not None:
        return _is_static_wrapper(getattr(module, attr, None))
    try:
        spec = importlib.util.find_spec(module_name)
        origin = spec.origin if spec else None
        if not origin or not origin.endswith(".py"):
            return False
        with open(origin, encoding="utf-8", errors="replace") as source:
            return bool(_STATIC_WSGI_SOURCE.search(source.read()))
    except Exception:
        return False


def _staticfiles_backend() -> dict[str, Any] | None:
    storages = getattr(settings, "STORAGES", None) or {}
    backend = storages.get("staticfiles")
    return backend if isinstance(backend, dict) and backend.get("BACKEND") else None


def _staticfiles_storage_class() -> type | None:
    backend = _staticfiles_backend()
    if backend is None:
        return None
    try:
        cls = import_string(backend["BACKEND"])
    except Exception:  # Django reports a bad backend when the storage is first used
        return None
    return cls if isinstance(cls, type) else None


def _is_filesystem_storage(cls: type) -> bool:
    from django.core.files.storage import FileSystemStorage

    return issubclass(cls, FileSystemStorage)


def _manifest_problem() -> str | None:
    """Why the strict manifest storage cannot find its manifest, or None if it's fine."""
    from django.contrib.staticfiles.storage import ManifestFilesMixin
    from django.core.files.storage import storages

    cls = _staticfiles_storage_class()
    if cls is None or not issubclass(cls, ManifestFilesMixin) or not _is_filesystem_storage(cls):
        return None
    if not getattr(cls, "manifest_strict", True):
        return None
    no_root = f"STATIC_ROOT is not set, so {cls.__name__} has no manifest to read"
    try:
        storage = storages.create_storage(_staticfiles_backend())
    except ImproperlyConfigured:  # StaticFilesStorage reading its manifest without a root
        return None if getattr(settings, "STATIC_ROOT", None) else no_root
    except Exception:
        return None
    manifest = getattr(storage, "manifest_name", "staticfiles.json")
    if not getattr(storage.manifest_storage, "location", None):
        return no_root
    try:
        if storage.manifest_storage.exists(manifest):
            return None
        where = storage.manifest_storage.path(manifest)
    except Exception:
        return None
    return f"{cls.__name__} needs {where}, which does not exist"


def _dir_missing_or_empty(path: str) -> str | None:
    if not os.path.isdir(path):
        return "does not exist"
    try:
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                return "is empty"
    except OSError:
        return None
    return None


# --- static-file checks (deployment) -------------------------------------------------------

def check_static_files(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W002/W003/W004/E002: is anything going to serve STATIC_URL once DEBUG is off?"""
    if settings.DEBUG or not _staticfiles_installed():
        return []
    messages: list[CheckMessage] = []
    middleware = _static_middleware()
    local = _static_url_is_local()
    external = _served_externally()
    static_root = getattr(settings, "STATIC_ROOT", None)

    if local and not external and middleware is None and not _wsgi_serves_static():
        messages.append(Warning(
            f"Nothing serves STATIC_URL ({settings.STATIC_URL!r}): DEBUG is False, and neither "
            "WhiteNoise/ServeStatic middleware nor a WhiteNoise/ServeStatic WSGI wrapper is "
            "configured, so every /static/ request will be a 404.",
            hint=_hint(
                "Install WhiteNoise ('pip install whitenoise') and add "
                "'whitenoise.middleware.WhiteNoiseMiddleware' directly after "
                f"SecurityMiddleware, or set {SERVED_BY_SETTING} = 'proxy' if a proxy or CDN "
                "serves STATIC_URL.", "django_prefork.W002"),
            id="django_prefork.W002",
        ))
    if middleware is not None and not static_root:
        messages.append(Warning(
            f"{middleware[1]} is in MIDDLEWARE but STATIC_ROOT is not set, so it has no "
            "files to serve.",
            hint=_hint("Set STATIC_ROOT (e.g. BASE_DIR / 'staticfiles') and run "
                       "'manage.py collectstatic'.", "django_prefork.W003"),
            id="django_prefork.W003",
        ))

    manifest_problem = _manifest_problem()
    if manifest_problem:
        messages.append(Error(
            f"{manifest_problem}: with DEBUG = False every {{% static %}} tag raises "
            "ValueError and the page becomes a 500.",
            hint=_hint("Run 'manage.py collectstatic --noinput' as part of every deploy.",
                       "django_prefork.E002"),
            id="django_prefork.E002",
        ))
    elif static_root and local and not external:
        cls = _staticfiles_storage_class()
        state = _dir_missing_or_empty(str(static_root))
        if state and (cls is None or _is_filesystem_storage(cls)):
            messages.append(Warning(
                f"STATIC_ROOT ({str(static_root)!r}) {state}: collectstatic has not run, so "
                "there are no static files to serve.",
                hint=_hint("Run 'manage.py collectstatic --noinput' as part of every deploy.",
                           "django_prefork.W004"),
                id="django_prefork.W004",
            ))
    return messages


def _media_served_externally() -> bool:
    return bool(getattr(settings, MEDIA_SERVED_BY_SETTING, None)) or _served_externally()


def _urlconf_serves(path: str) -> bool:
    """Whether the project's URLconf has a view for ``path`` (e.g. a static.serve route)."""
    from django.urls import Resolver404, resolve

    try:
        resolve(path)
    except Resolver404:
        return False
    except Exception:  # a broken URLconf is Django's own check (urls.E004 and friends)
        return True
    return True


def check_media_files(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W011: with DEBUG off, Django serves no uploads; something else must serve MEDIA_URL."""
    # Django reads an unset (empty) MEDIA_URL as the script prefix, "/": no media URL.
    url = str(getattr(settings, "MEDIA_URL", "") or "")
    unset = not settings.is_overridden("MEDIA_URL") or url in ("", "/")
    if settings.DEBUG or unset or _media_served_externally():
        return []
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return []  # absolute: a CDN or another host serves it
    default = (getattr(settings, "STORAGES", None) or {}).get("default") or {}
    try:
        storage_cls = import_string(default["BACKEND"]) if default.get("BACKEND") else None
    except Exception:
        storage_cls = None
    if isinstance(storage_cls, type) and not _is_filesystem_storage(storage_cls):
        return []  # a remote storage (S3, ...) hands out its own URLs
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    if _urlconf_serves(path.rstrip("/") + "/prefork-check-probe.txt"):
        return []
    return [Warning(
        f"Nothing serves MEDIA_URL ({url!r}): DEBUG is False, Django serves uploaded files "
        "only in development, and no URL pattern matches it, so every uploaded file's URL "
        "will be a 404.",
        hint=_hint(f"Let the proxy serve MEDIA_ROOT at {url} (then set "
                   f"{MEDIA_SERVED_BY_SETTING} = 'proxy'), or store uploads on a remote "
                   "storage whose URLs serve them.", "django_prefork.W011"),
        id="django_prefork.W011",
    )]


def check_static_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W005/W006: static middleware must answer before other middleware can."""
    found = _static_middleware()
    if found is None:
        return []
    index, path, _ = found
    above = [str(m) for m in settings.MIDDLEWARE[:index]]
    early = [m for m in above if m in EARLY_RESPONSE_MIDDLEWARE]
    if early:
        reasons = "; ".join(f"{m} {EARLY_RESPONSE_MIDDLEWARE[m]}" for m in early)
        return [Warning(
            f"{path} is below middleware that answers requests first ({reasons}), so static "
            "requests can be redirected, rejected or cached before it serves them.",
            hint=_hint(f"Move {path} directly after {SECURITY_MIDDLEWARE}.",
                       "django_prefork.W006"),
            obj=path,
            id="django_prefork.W006",
        )]
    others = [m for m in above if m not in ALLOWED_ABOVE_STATIC]
    if others:
        return [Warning(
            f"{path} should be directly after SecurityMiddleware, above all other middleware, "
            f"but it is below {', '.join(others)}, which then run for every static file.",
            hint=_hint(f"Move {path} directly after {SECURITY_MIDDLEWARE}.",
                       "django_prefork.W005"),
            obj=path,
            id="django_prefork.W005",
        )]
    return []


def check_static_dev_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W007: WhiteNoise/ServeStatic development switches left on in production."""
    found = _static_middleware()
    if settings.DEBUG or found is None:
        return []
    prefix = "WHITENOISE" if found[2] == "whitenoise" else "SERVESTATIC"
    messages: list[CheckMessage] = []
    for name, why in (
        ("AUTOREFRESH", "rescans the file system on every request"),
        ("USE_FINDERS", "serves files straight from the apps' static directories"),
    ):
        setting = f"{prefix}_{name}"
        if getattr(settings, setting, None) is True:
            messages.append(Warning(
                f"{setting} = True with DEBUG = False: it {why}, which is meant for "
                "development only.",
                hint=_hint(f"Remove {setting} (it follows DEBUG) and run collectstatic.",
                           "django_prefork.W007"),
                id="django_prefork.W007",
            ))
    return messages


def check_static_storage(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W008: WhiteNoise/ServeStatic serve local files; a remote storage never gives them any."""
    found = _static_middleware()
    cls = _staticfiles_storage_class()
    if found is None or cls is None or _is_filesystem_storage(cls):
        return []
    backend = _staticfiles_backend() or {}
    return [Warning(
        f"{found[1]} serves files from STATIC_ROOT on local disk, but STORAGES['staticfiles'] "
        f"is {backend.get('BACKEND')}, which stores them elsewhere.",
        hint=_hint("Use a file-system storage (e.g. whitenoise.storage."
                   "CompressedManifestStaticFilesStorage) or remove the middleware and let "
                   "the remote storage's URLs serve the files.", "django_prefork.W008"),
        id="django_prefork.W008",
    )]


def check_ignored_storage_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W009: Django 5.1 removed STATICFILES_STORAGE/DEFAULT_FILE_STORAGE and ignores them."""
    if django.VERSION < (5, 1):
        return []
    alias = {"STATICFILES_STORAGE": "staticfiles", "DEFAULT_FILE_STORAGE": "default"}
    return [
        Warning(
            f"{name} is set, but Django {django.get_version()} ignores it; the storage in "
            f"STORAGES[{alias[name]!r}] is used instead.",
            hint=_hint(f"Move the value to STORAGES[{alias[name]!r}]['BACKEND'] and delete "
                       f"{name}.", "django_prefork.W009"),
            id="django_prefork.W009",
        )
        for name in _SETTINGS_IGNORED_SINCE_51
        if settings.is_overridden(name)
    ]


# --- serving-only check --------------------------------------------------------------------

def check_debug_while_serving(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W001: DEBUG = True under runprefork means development settings are being served."""
    if _serving is None or not settings.DEBUG:
        return []
    return [Warning(
        "DEBUG = True while serving with runprefork: error pages show settings and source "
        "code, and Django keeps every SQL query in memory.",
        hint=_hint("Use production settings (DEBUG = False) for runprefork; use runserver "
                   "for development.", "django_prefork.W001"),
        id="django_prefork.W001",
    )]


# --- worker class --------------------------------------------------------------------------

def check_gevent_persistent_connections(app_configs: Any = None,
                                        **kwargs: Any) -> list[CheckMessage]:
    """W010: with gevent every greenlet opens its own DB connection; persistent ones pile up.

    The worker class is the one runprefork will use, command line included, when it runs the
    check; ``PREFORK`` and the environment otherwise.
    """
    cfg = _server_config()
    if cfg is None or cfg.worker_class != "gevent":
        return []
    messages: list[CheckMessage] = []
    for alias, database in (getattr(settings, "DATABASES", None) or {}).items():
        if not isinstance(database, dict):
            continue
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age == 0:
            continue
        messages.append(Warning(
            f"DATABASES[{alias!r}] has CONN_MAX_AGE = {max_age!r} with the gevent worker: "
            "every greenlet (one per client connection at a time) has its own database "
            "connection, and a persistent one stays open while the greenlet serves its "
            "client, idle keep-alive included, and while it waits for the next: up to "
            "worker_connections database connections per worker.",
            hint=_hint("Set CONN_MAX_AGE = 0 with the gevent worker; to reuse connections, "
                       "put a connection pooler such as PgBouncer in front of the database.",
                       "django_prefork.W010"),
            obj=f"settings.DATABASES[{alias!r}]",
            id="django_prefork.W010",
        ))
    return messages


#: Deployment checks that runprefork also runs at start-up.
_SERVING_DEPLOY_CHECKS = (check_static_files, check_static_middleware_order,
                          check_static_dev_settings, check_static_storage)


# --- Django settings against the server's ---------------------------------------------------

def _server_config() -> Any:
    """The server Config the checks should judge: runprefork's own (command line included)
    inside serving(), else PREFORK and the environment; None if they are invalid (E001)."""
    if _serving is not None and _serving.cfg is not None:
        return _serving.cfg
    from django_prefork.conf import ConfigError, load_config

    try:
        return load_config(prefork=getattr(settings, "PREFORK", None), environ=os.environ)
    except ConfigError:
        return None


_LOOPBACK_TRUST = {"127.0.0.1", "::1", "localhost", "127.0.0.0/8", "::1/128"}


def _reachable_from_other_hosts(cfg: Any) -> list[str]:
    """The TCP binds other machines can connect to (not loopback, not a unix socket)."""
    import ipaddress

    from django_prefork.conf import parse_bind

    found = []
    for spec in cfg.bind:
        bind = parse_bind(spec)
        if bind.kind != "tcp":
            continue  # a unix socket's peer is local; an inherited fd is unknown
        try:
            loopback = ipaddress.ip_address(bind.host).is_loopback if bind.host else False
        except ValueError:
            loopback = bind.host == "localhost"
        if not loopback:
            found.append(spec)
    return found


def _trusts_only_loopback(cfg: Any) -> bool:
    allow = {str(a).strip() for a in (cfg.forwarded_allow_ips or [])}
    return "*" not in allow and allow <= _LOOPBACK_TRUST


def _scheme_header_environ_keys(cfg: Any) -> dict[str, str]:
    """secure_scheme_headers as Django's META sees them: HTTP_X_FORWARDED_PROTO -> https."""
    return {"HTTP_" + str(name).upper().replace("-", "_"): str(value).strip().lower()
            for name, value in (cfg.secure_scheme_headers or {}).items()}


def check_proxy_ssl_header(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W012/W013: Django's SECURE_PROXY_SSL_HEADER against the server's proxy trust."""
    cfg = _server_config()
    if cfg is None:
        return []
    remote_binds = _reachable_from_other_hosts(cfg)
    if not remote_binds or not _trusts_only_loopback(cfg):
        return []
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    allowed = ", ".join(cfg.forwarded_allow_ips or []) or "none"
    if header:
        name = header[0] if isinstance(header, (tuple, list)) and header else header
        return [Warning(
            f"SECURE_PROXY_SSL_HEADER makes Django trust {name} from every client, but "
            f"runprefork listens on {', '.join(remote_binds)} and trusts proxy headers only "
            f"from forwarded_allow_ips ({allowed}): a proxy on another host is not trusted "
            "by the server, and a client that connects directly can tell Django the "
            "request was HTTPS.",
            hint=_hint("Set FORWARDED_ALLOW_IPS (PREFORK or --forwarded-allow-ips) to your "
                       "proxy's address ('*' if only the proxy can reach the server) and "
                       "remove SECURE_PROXY_SSL_HEADER (runprefork then "
                       "sets wsgi.url_scheme from the proxy's header, which Django uses), or "
                       "bind to 127.0.0.1 or a unix socket behind the proxy.",
                       "django_prefork.W012"),
            obj="settings.SECURE_PROXY_SSL_HEADER",
            id="django_prefork.W012",
        )]
    if getattr(settings, "SECURE_SSL_REDIRECT", False) and _scheme_header_environ_keys(cfg):
        return [Warning(
            f"SECURE_SSL_REDIRECT is on, runprefork listens on {', '.join(remote_binds)} and "
            f"trusts X-Forwarded-Proto and the other secure_scheme_headers only from "
            f"forwarded_allow_ips ({allowed}): behind a proxy on another host every HTTPS "
            "request reaches Django as http and is redirected to HTTPS again, forever.",
            hint=_hint("Set FORWARDED_ALLOW_IPS (PREFORK or --forwarded-allow-ips) to your "
                       "proxy's address, or bind to 127.0.0.1 or a unix socket if the proxy "
                       "runs on this host.", "django_prefork.W013"),
            obj="settings.SECURE_SSL_REDIRECT",
            id="django_prefork.W013",
        )]
    return []


def check_upload_limit(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W014: a Django body limit the server's own smaller limit makes unreachable."""
    cfg = _server_config()
    django_limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    if cfg is None or not cfg.limit_request_body or django_limit is None:
        return []
    if django_limit <= cfg.limit_request_body:
        return []
    return [Warning(
        f"DATA_UPLOAD_MAX_MEMORY_SIZE ({django_limit} bytes) is above runprefork's "
        f"limit_request_body ({cfg.limit_request_body} bytes): the server answers 413 to "
        "every body over its limit before Django sees it, file uploads included, so Django's "
        "larger limit is never reached.",
        hint=_hint("Raise LIMIT_REQUEST_BODY (PREFORK or --limit-request-body) to at least "
                   "the largest body you accept, uploads included, or lower "
                   "DATA_UPLOAD_MAX_MEMORY_SIZE to match.", "django_prefork.W014"),
        obj="settings.DATA_UPLOAD_MAX_MEMORY_SIZE",
        id="django_prefork.W014",
    )]


#: The number of connections a database accepts from ordinary users, by Django vendor.
_CONNECTION_LIMIT_SQL = {
    "postgresql": "SELECT current_setting('max_connections')::int"
                  " - current_setting('superuser_reserved_connections')::int",
    "mysql": "SELECT @@max_connections",
}


def _connection_limit(alias: str) -> int | None:
    """The database's connection limit, or None when it cannot be read (vendor, network)."""
    from django.db import connections

    connection = connections[alias]
    sql = _CONNECTION_LIMIT_SQL.get(connection.vendor)
    if sql is None:
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
    except Exception:  # unreachable or refused: Django reports it where it matters
        return None
    return int(row[0]) if row and row[0] is not None else None


def check_database_connection_limit(app_configs: Any = None, databases: Any = None,
                                    **kwargs: Any) -> list[CheckMessage]:
    """W015: the server's most simultaneous DB connections against what the database allows.

    Runs only for the databases the caller names (``check --database default``,
    ``runprefork --check-config``), as Django's own database checks do: reading the limit
    needs a connection, which a plain start-up must not wait for.
    """
    cfg = _server_config()
    if not databases or cfg is None:
        return []
    from django.db import connections

    from django_prefork.workers import resolve_worker_class

    worker_class = resolve_worker_class(cfg.worker_class, cfg)
    per_worker = {"gthread": cfg.threads, "gevent": cfg.worker_connections}.get(worker_class, 1)
    most = cfg.workers * per_worker
    unit = {"gthread": f"{cfg.threads} threads", "gevent":
            f"{cfg.worker_connections} worker_connections"}.get(worker_class, "1 request")
    messages: list[CheckMessage] = []
    for alias in databases:
        if alias not in connections:
            continue
        limit = _connection_limit(alias)
        if limit is None or most <= limit:
            continue
        max_age = connections[alias].settings_dict.get("CONN_MAX_AGE", 0)
        held = (f"held between requests too, CONN_MAX_AGE = {max_age!r}" if max_age != 0
                else "one per request in flight")
        messages.append(Warning(
            f"runprefork may open {most} connections to DATABASES[{alias!r}] "
            f"({cfg.workers} {worker_class} workers x {unit}, {held}), but the database "
            f"accepts {limit}: under load requests fail with 'too many connections', and "
            "twice as many are needed for a moment during a HUP.",
            hint=_hint("Lower WORKERS, THREADS or WORKER_CONNECTIONS, raise the database's "
                       "max_connections, or put a connection pooler such as PgBouncer in "
                       "front of it.", "django_prefork.W015"),
            obj=f"settings.DATABASES[{alias!r}]",
            id="django_prefork.W015",
        ))
    return messages


#: Checks of Django settings against the server's, run by check --deploy and at start-up.
_SERVER_CHECKS = (check_proxy_ssl_header, check_upload_limit, check_database_connection_limit)


def register_checks() -> None:
    """Called from AppConfig.ready(); see the module docstring for the tag design."""
    checks.register(check_prefork_settings, TAG_SETTINGS)
    checks.register(check_gevent_persistent_connections, TAG_SETTINGS)
    checks.register(check_ignored_storage_settings, TAG_STATIC)
    for check in _SERVING_DEPLOY_CHECKS:
        checks.register(check, TAG_STATIC, deploy=True)
        checks.register(_only_while_serving(check), TAG_STARTUP)
    checks.register(check_media_files, TAG_MEDIA, deploy=True)
    checks.register(_only_while_serving(check_media_files), TAG_STARTUP)
    for check in _SERVER_CHECKS:
        checks.register(check, TAG_SERVER, deploy=True)
        checks.register(_only_while_serving(check), TAG_STARTUP)
    checks.register(check_debug_while_serving, TAG_STARTUP)
