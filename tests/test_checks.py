"""django-prefork's system checks: each one firing, and not firing."""

from __future__ import annotations

import json
import sys
import types

import pytest
from django.conf import settings
from django.core import checks as dj_checks
from django.test.utils import override_settings
from whitenoise import WhiteNoise
from whitenoise.middleware import WhiteNoiseMiddleware

from django_prefork import checks

SECURITY = "django.middleware.security.SecurityMiddleware"
WHITENOISE = "whitenoise.middleware.WhiteNoiseMiddleware"
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
COMMON = "django.middleware.common.CommonMiddleware"
MANIFEST = "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
WN_MANIFEST = "whitenoise.storage.CompressedManifestStaticFilesStorage"


class MyWhiteNoise(WhiteNoiseMiddleware):
    """A project's own subclass must count as static middleware."""


def storages(backend: str) -> dict:
    return {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": backend},
    }


STATIC_FILES = "django.contrib.staticfiles.storage.StaticFilesStorage"
BASE = {
    "DEBUG": False,
    "MIDDLEWARE": [SECURITY],
    "STATIC_URL": "/static/",
    "STATIC_ROOT": None,
    "STORAGES": storages(STATIC_FILES),
    "WSGI_APPLICATION": None,
    "PREFORK": {},
}


def configured(**overrides):
    """override_settings on a known base, so the tests don't depend on the settings module."""
    return override_settings(**{**BASE, **overrides})


def ids(messages: list) -> list[str]:
    return [m.id for m in messages]


@pytest.fixture
def collected(tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    (root / "app.css").write_text("body{}")
    return root


# --- registration and tags -----------------------------------------------------------------

def test_static_checks_are_deploy_only():
    with configured(DEBUG=False, MIDDLEWARE=[]):
        assert "django_prefork.W002" not in ids(dj_checks.run_checks())
        assert "django_prefork.W002" in ids(
            dj_checks.run_checks(include_deployment_checks=True))


def test_startup_tag_runs_static_checks():
    with configured(DEBUG=False, MIDDLEWARE=[]):
        assert "django_prefork.W002" in ids(checks.run_startup_checks())


# --- W001 -----------------------------------------------------------------------------------

def test_w001_debug_only_when_serving():
    with configured(DEBUG=True):
        assert "django_prefork.W001" not in ids(
            dj_checks.run_checks(include_deployment_checks=True))
        assert "django_prefork.W001" in ids(checks.run_startup_checks())
        with checks.serving():
            assert ids(checks.check_debug_while_serving()) == ["django_prefork.W001"]
    with configured(DEBUG=False), checks.serving():
        assert checks.check_debug_while_serving() == []


def test_messages_link_to_docs():
    with configured(DEBUG=True), checks.serving():
        (msg,) = checks.check_debug_while_serving()
    assert msg.hint.endswith("See django-prefork's docs/checks.md#w001")


def test_every_check_id_has_its_section_in_the_docs():
    """Each ID the checks can emit names a section that exists in docs/checks.md."""
    import re
    from pathlib import Path

    source = Path(checks.__file__).read_text()
    emitted = set(re.findall(r'id="(django_prefork\.[EW]\d{3})"', source))
    hinted = set(re.findall(r'"(django_prefork\.[EW]\d{3})"\)', source))
    assert emitted and emitted == hinted  # every message has a hint with its own ID
    docs = (Path(__file__).resolve().parent.parent / checks.DOCS_PAGE).read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', docs))
    for check_id in sorted(emitted):
        page, _, anchor = checks.docs_reference(check_id).partition("#")
        assert page == checks.DOCS_PAGE
        assert anchor in anchors, f"{check_id}: no <a id={anchor!r}> in {checks.DOCS_PAGE}"
        assert f"### {check_id} " in docs, f"{check_id} has no reference section"


def test_startup_checks_run_in_the_ordinary_pass_only_while_serving():
    with configured(DEBUG=False, MIDDLEWARE=[]):
        assert "django_prefork.W002" not in ids(dj_checks.run_checks())
        with checks.serving():
            found = ids(dj_checks.run_checks())
    assert found.count("django_prefork.W002") == 1


# --- W002 -----------------------------------------------------------------------------------

@configured(DEBUG=False, MIDDLEWARE=[SECURITY])
def test_w002_nothing_serves_static():
    messages = checks.check_static_files()
    assert ids(messages) == ["django_prefork.W002"]
    assert "PREFORK_STATIC_SERVED_BY" in messages[0].hint


@pytest.mark.parametrize("overrides", [
    {"DEBUG": True},
    {"STATIC_URL": "https://cdn.example.com/static/"},
    {"STATIC_URL": "//cdn.example.com/static/"},
    {"PREFORK_STATIC_SERVED_BY": "proxy"},
    {"MIDDLEWARE": [SECURITY, WHITENOISE]},
    {"MIDDLEWARE": [SECURITY, f"{__name__}.MyWhiteNoise"]},
])
def test_w002_not_fired(overrides, collected):
    with configured(**{"STATIC_ROOT": str(collected), **overrides}):
        assert "django_prefork.W002" not in ids(checks.check_static_files())


def test_w002_not_fired_without_staticfiles_app():
    with configured(DEBUG=False, INSTALLED_APPS=["django_prefork"]):
        assert checks.check_static_files() == []


def test_w002_wsgi_wrapper_found_in_source_without_import(tmp_path, monkeypatch):
    (tmp_path / "wrapped_wsgi.py").write_text(
        "from django.core.wsgi import get_wsgi_application\n"
        "from whitenoise import WhiteNoise\n"
        "application = WhiteNoise(get_wsgi_application(), root='/srv/static')\n"
        "raise RuntimeError('the check must not import me')\n")
    (tmp_path / "plain_wsgi.py").write_text("raise RuntimeError('not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with configured(DEBUG=False, WSGI_APPLICATION="wrapped_wsgi.application"):
        assert "django_prefork.W002" not in ids(checks.check_static_files())
    with configured(DEBUG=False, WSGI_APPLICATION="plain_wsgi.application"):
        assert "django_prefork.W002" in ids(checks.check_static_files())
    assert "wrapped_wsgi" not in sys.modules


def test_w002_wsgi_wrapper_already_imported(monkeypatch):
    module = types.ModuleType("loaded_wsgi")
    module.application = WhiteNoise(lambda environ, start_response: [])
    monkeypatch.setitem(sys.modules, "loaded_wsgi", module)
    with configured(DEBUG=False, WSGI_APPLICATION="loaded_wsgi.application"):
        assert "django_prefork.W002" not in ids(checks.check_static_files())


def test_w002_wsgi_wrapper_given_by_runprefork():
    class Sentry:  # an outer wrapper around WhiteNoise, like an APM middleware
        def __init__(self, app):
            self.app = app

    app = Sentry(WhiteNoise(lambda environ, start_response: []))
    with configured(DEBUG=False), checks.serving(app):
        assert "django_prefork.W002" not in ids(checks.check_static_files())
    with configured(DEBUG=False), checks.serving(Sentry(object())):
        assert "django_prefork.W002" in ids(checks.check_static_files())


# --- W003 / W004 / E002 ---------------------------------------------------------------------

@configured(DEBUG=False, MIDDLEWARE=[SECURITY, WHITENOISE], STATIC_ROOT=None)
def test_w003_middleware_without_static_root():
    assert ids(checks.check_static_files()) == ["django_prefork.W003"]


def test_w004_static_root_missing_or_empty(tmp_path, collected):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = {"DEBUG": False, "MIDDLEWARE": [SECURITY, WHITENOISE]}
    for root in (tmp_path / "missing", empty):
        with configured(STATIC_ROOT=str(root), **base):
            assert ids(checks.check_static_files()) == ["django_prefork.W004"]
    with configured(STATIC_ROOT=str(collected), **base):
        assert checks.check_static_files() == []
    with configured(STATIC_ROOT=str(empty), PREFORK_STATIC_SERVED_BY="cdn", **base):
        assert checks.check_static_files() == []


@pytest.mark.parametrize("backend", [MANIFEST, WN_MANIFEST])
def test_e002_manifest_missing(backend, collected):
    with configured(DEBUG=False, MIDDLEWARE=[SECURITY, WHITENOISE],
                           STATIC_ROOT=str(collected), STORAGES=storages(backend)):
        messages = checks.check_static_files()
        assert ids(messages) == ["django_prefork.E002"]
        assert "staticfiles.json" in messages[0].msg
        (collected / "staticfiles.json").write_text(json.dumps({"paths": {}, "version": "1.1"}))
        assert checks.check_static_files() == []


def test_e002_not_fired_with_debug(collected):
    with configured(DEBUG=True, STATIC_ROOT=str(collected), STORAGES=storages(MANIFEST)):
        assert checks.check_static_files() == []


def test_e002_empty_root_reports_manifest_only(tmp_path):
    with configured(DEBUG=False, MIDDLEWARE=[SECURITY, WHITENOISE],
                           STATIC_ROOT=str(tmp_path / "missing"), STORAGES=storages(MANIFEST)):
        assert ids(checks.check_static_files()) == ["django_prefork.E002"]


def test_e002_static_root_unset():
    with configured(DEBUG=False, PREFORK_STATIC_SERVED_BY="proxy", STATIC_ROOT=None,
                           STORAGES=storages(MANIFEST)):
        messages = checks.check_static_files()
    assert ids(messages) == ["django_prefork.E002"]
    assert "STATIC_ROOT is not set" in messages[0].msg


# --- W005 / W006 ----------------------------------------------------------------------------

@pytest.mark.parametrize("middleware", [
    [SECURITY, WHITENOISE, SESSION, COMMON],
    [WHITENOISE, SECURITY],
    ["corsheaders.middleware.CorsMiddleware", SECURITY, WHITENOISE],
    [SECURITY, SESSION],
])
def test_middleware_order_fine(middleware):
    with configured(MIDDLEWARE=middleware):
        assert checks.check_static_middleware_order() == []


def test_w005_not_directly_after_security():
    with configured(MIDDLEWARE=[SECURITY, SESSION, WHITENOISE]):
        messages = checks.check_static_middleware_order()
    assert ids(messages) == ["django_prefork.W005"]
    assert SESSION in messages[0].msg


def test_w006_below_early_response_middleware():
    with configured(MIDDLEWARE=[SECURITY, SESSION, COMMON, WHITENOISE]):
        messages = checks.check_static_middleware_order()
    assert ids(messages) == ["django_prefork.W006"]
    assert COMMON in messages[0].msg


# --- W007 -----------------------------------------------------------------------------------

def test_w007_dev_switches_in_production():
    mw = [SECURITY, WHITENOISE]
    with configured(DEBUG=False, MIDDLEWARE=mw, WHITENOISE_AUTOREFRESH=True,
                           WHITENOISE_USE_FINDERS=True):
        messages = checks.check_static_dev_settings()
    assert ids(messages) == ["django_prefork.W007", "django_prefork.W007"]
    assert "WHITENOISE_AUTOREFRESH" in messages[0].msg
    assert "WHITENOISE_USE_FINDERS" in messages[1].msg
    with configured(DEBUG=True, MIDDLEWARE=mw, WHITENOISE_AUTOREFRESH=True):
        assert checks.check_static_dev_settings() == []
    with configured(DEBUG=False, MIDDLEWARE=mw, WHITENOISE_AUTOREFRESH=False):
        assert checks.check_static_dev_settings() == []


# --- W008 / W009 ----------------------------------------------------------------------------

def test_w008_remote_storage_with_whitenoise():
    remote = storages("django.core.files.storage.InMemoryStorage")
    with configured(MIDDLEWARE=[SECURITY, WHITENOISE], STORAGES=remote):
        assert ids(checks.check_static_storage()) == ["django_prefork.W008"]
    with configured(MIDDLEWARE=[SECURITY], STORAGES=remote):
        assert checks.check_static_storage() == []
    with configured(MIDDLEWARE=[SECURITY, WHITENOISE], STORAGES=storages(WN_MANIFEST)):
        assert checks.check_static_storage() == []


def test_w009_ignored_staticfiles_storage():
    assert checks.check_ignored_storage_settings() == []
    with configured(STATICFILES_STORAGE=WN_MANIFEST):
        messages = dj_checks.run_checks(tags=[checks.TAG_STATIC])
    assert ids(messages) == ["django_prefork.W009"]
    assert "STORAGES['staticfiles']" in messages[0].hint


# --- E001 -----------------------------------------------------------------------------------

def test_e001_unknown_key_did_you_mean():
    with configured(PREFORK={"WROKERS": 3}):
        messages = dj_checks.run_checks(tags=[checks.TAG_SETTINGS])
    assert ids(messages) == ["django_prefork.E001"]
    assert "'WORKERS'" in messages[0].msg
    assert messages[0].is_serious()


def test_e001_one_error_per_problem():
    with configured(PREFORK={"WORKERS": "many", "TIMEOUT": -5, "BIND": "127.0.0.1:8000"}):
        messages = checks.check_prefork_settings()
    assert ids(messages) == ["django_prefork.E001", "django_prefork.E001"]
    assert "WORKERS" in messages[0].msg and "'many'" in messages[0].msg
    assert "\n" not in messages[0].msg


def test_e001_valid_or_missing_prefork():
    with configured(PREFORK={"WORKERS": 2}):
        assert checks.check_prefork_settings() == []
    with override_settings():
        del settings.PREFORK
        assert checks.check_prefork_settings() == []


# --- W011 -----------------------------------------------------------------------------------

def test_w011_media_url_that_nothing_serves():
    with configured(MEDIA_URL="/media/"):
        (msg,) = checks.check_media_files()
    assert msg.id == "django_prefork.W011"
    assert "'/media/'" in msg.msg and "PREFORK_MEDIA_SERVED_BY" in msg.hint
    with configured(MEDIA_URL="/media/"):
        assert "django_prefork.W011" in ids(dj_checks.run_checks(include_deployment_checks=True))
        assert "django_prefork.W011" not in ids(dj_checks.run_checks())
        assert "django_prefork.W011" in ids(checks.run_startup_checks())


@pytest.mark.parametrize("overrides", [
    {"MEDIA_URL": ""},
    {"MEDIA_URL": "/media/", "DEBUG": True},
    {"MEDIA_URL": "https://media.example.com/"},
    {"MEDIA_URL": "//media.example.com/"},
    {"MEDIA_URL": "/media/", "PREFORK_MEDIA_SERVED_BY": "proxy"},
    {"MEDIA_URL": "/media/", "PREFORK_STATIC_SERVED_BY": "nginx"},
    {"MEDIA_URL": "/media/", "ROOT_URLCONF": "testproject.urls_media"},
    {"MEDIA_URL": "/media/", "STORAGES": {
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
        "staticfiles": {"BACKEND": STATIC_FILES}}},
], ids=["unset", "debug", "absolute", "scheme-relative", "own-opt-out", "static-opt-out",
        "urlconf-serves", "remote-storage"])
def test_w011_silent(overrides):
    with configured(**overrides):
        assert checks.check_media_files() == []


# --- W010 with the worker class from the command line ---------------------------------------

@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w010_sees_the_worker_class_runprefork_will_use():
    from django_prefork.conf import load_config

    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:",
                             "CONN_MAX_AGE": 60}}
    cli_cfg = load_config(prefork={}, cli={"worker_class": "gevent"})
    with configured(DATABASES=databases):
        assert checks.check_gevent_persistent_connections() == []
        with checks.serving(cfg=cli_cfg):
            assert ids(checks.check_gevent_persistent_connections()) == ["django_prefork.W010"]


# --- W012/W013: SECURE_PROXY_SSL_HEADER against forwarded_allow_ips -------------------------

PROXY_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "[::]:8000", "10.0.0.5:8000"])
def test_w012_django_trusts_the_header_the_server_does_not(bind):
    with configured(PREFORK={"BIND": bind}, SECURE_PROXY_SSL_HEADER=PROXY_HEADER):
        (msg,) = checks.check_proxy_ssl_header()
        assert "django_prefork.W012" in ids(dj_checks.run_checks(include_deployment_checks=True))
    assert msg.id == "django_prefork.W012"
    assert bind in msg.msg and "HTTP_X_FORWARDED_PROTO" in msg.msg
    assert "FORWARDED_ALLOW_IPS" in msg.hint


def test_w013_ssl_redirect_behind_an_untrusted_proxy_loops():
    with configured(PREFORK={"BIND": "0.0.0.0:8000"}, SECURE_SSL_REDIRECT=True,
                    SECURE_PROXY_SSL_HEADER=None):
        (msg,) = checks.check_proxy_ssl_header()
    assert msg.id == "django_prefork.W013" and "forever" in msg.msg


@pytest.mark.parametrize("overrides", [
    {"PREFORK": {"BIND": "127.0.0.1:8000"}, "SECURE_PROXY_SSL_HEADER": PROXY_HEADER},
    {"PREFORK": {"BIND": "unix:/run/site.sock"}, "SECURE_PROXY_SSL_HEADER": PROXY_HEADER},
    {"PREFORK": {"BIND": "0.0.0.0:8000", "FORWARDED_ALLOW_IPS": "10.0.0.2"},
     "SECURE_PROXY_SSL_HEADER": PROXY_HEADER},
    {"PREFORK": {"BIND": "0.0.0.0:8000", "FORWARDED_ALLOW_IPS": "*"},
     "SECURE_SSL_REDIRECT": True},
    {"PREFORK": {"BIND": "0.0.0.0:8000"}, "SECURE_PROXY_SSL_HEADER": None},
    {"PREFORK": {"BIND": "0.0.0.0:8000", "SECURE_SCHEME_HEADERS": {}},
     "SECURE_SSL_REDIRECT": True},
    {"PREFORK": {"WORKERS": 0}, "SECURE_PROXY_SSL_HEADER": PROXY_HEADER},  # E001's business
], ids=["loopback", "unix", "proxy-trusted", "trust-all", "no-header", "no-scheme-headers",
        "invalid-prefork"])
def test_w012_w013_silent(overrides):
    with configured(**overrides):
        assert checks.check_proxy_ssl_header() == []


def test_w012_uses_the_command_line_bind():
    from django_prefork.conf import load_config

    cfg = load_config(prefork={}, cli={"bind": ["0.0.0.0:9000"]})
    with configured(SECURE_PROXY_SSL_HEADER=PROXY_HEADER):
        assert checks.check_proxy_ssl_header() == []
        with checks.serving(cfg=cfg):
            assert ids(checks.check_proxy_ssl_header()) == ["django_prefork.W012"]


# --- W014: DATA_UPLOAD_MAX_MEMORY_SIZE above limit_request_body ------------------------------

def test_w014_django_limit_above_the_server_limit():
    with configured(PREFORK={"LIMIT_REQUEST_BODY": 1_000_000},
                    DATA_UPLOAD_MAX_MEMORY_SIZE=5_000_000):
        (msg,) = checks.check_upload_limit()
    assert msg.id == "django_prefork.W014"
    assert "5000000" in msg.msg and "1000000" in msg.msg


@pytest.mark.parametrize(("server_limit", "django_limit"), [
    (0, 5_000_000), (5_000_000, 5_000_000), (10_000_000, 2_621_440), (1_000, None)])
def test_w014_silent(server_limit, django_limit):
    with configured(PREFORK={"LIMIT_REQUEST_BODY": server_limit},
                    DATA_UPLOAD_MAX_MEMORY_SIZE=django_limit):
        assert checks.check_upload_limit() == []


# --- W015: the database's connection limit ---------------------------------------------------

def test_w015_needs_databases_and_a_vendor_with_a_limit():
    with configured(PREFORK={"WORKERS": 500}):
        assert checks.check_database_connection_limit() == []  # no connection allowed
        assert checks.check_database_connection_limit(databases=["default"]) == []  # SQLite


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throw-away PostgreSQL server on a unix socket, with max_connections = 12."""
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile

    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp_path: its parents are private to root, and postgres must enter.
    directory = tempfile.mkdtemp(prefix="prefork-pg-")
    if as_user:
        shutil.chown(directory, "postgres")
    data = os.path.join(directory, "data")
    run = dict(check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    subprocess.run([*as_user, initdb, "-D", data, "-A", "trust", "-U", "prefork"], **run)
    options = f"-k {directory} -c listen_addresses='' -c max_connections=12"
    subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l",
                    os.path.join(directory, "log"), "-w", "-t", "60", "start"], **run)
    try:
        yield directory
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
def test_w015_reads_the_limit_of_a_real_postgresql(postgres, tmp_path):
    import os
    import subprocess

    from server import REPO_ROOT, TESTS_DIR

    (tmp_path / "pgsettings.py").write_text(
        "from testproject.settings import *\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.postgresql', "
        f"'NAME': 'postgres', 'USER': 'prefork', 'HOST': {postgres!r}, 'CONN_MAX_AGE': 60}}}}\n"
        "PREFORK = {'WORKERS': 3, 'THREADS': 4}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR),
                                                        str(REPO_ROOT)])}

    def django(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "django", *args, "--settings=pgsettings"],
                                capture_output=True, text=True, env=env, timeout=120,
                                cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
        return result.stdout + result.stderr

    # 3 gthread workers x 4 threads = 12 connections; the database accepts 12 - 3 reserved.
    output = django("runprefork", "--check-config")
    assert "django_prefork.W015" in output, output
    assert "may open 12 connections to DATABASES['default']" in output
    assert "the database accepts 9" in output
    assert "django_prefork.W015" not in django("runprefork", "--check-config", "--threads", "2")
    # manage.py check connects only when told which database it may use.
    assert "django_prefork.W015" in django("check", "--deploy", "--database", "default")
    import django as django_module

    if django_module.VERSION < (6, 1):
        assert "django_prefork.W015" not in django("check", "--deploy")
    # (Django 6.1's check passes every database to the checks by default: it connects.)
