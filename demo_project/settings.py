"""Settings for demo_project, a small site served by ``python manage.py runprefork``.

This is a demo: read the comments before copying anything into production.
"""

import os
from pathlib import Path

# demo_project/ itself: the database and collected static files live beside this file.
BASE_DIR = Path(__file__).resolve().parent


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


# Set DJANGO_SECRET_KEY in any real deployment; the fallback is public and for the demo only.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-demo-only-do-not-use-in-production"
)

DEBUG = env_bool("DJANGO_DEBUG", default=False)

# Extend with a comma-separated list, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", *env_list("DJANGO_ALLOWED_HOSTS")]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prefork",
    "demo_project.pages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo_project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_SQLITE_PATH") or BASE_DIR / "db.sqlite3",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: `manage.py collectstatic` copies them to STATIC_ROOT, and WhiteNoise serves
# them (compressed, with cache-busting names) from the Django workers.
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Behind a reverse proxy (nginx) that terminates TLS: DJANGO_BEHIND_PROXY=1.
# The proxy must set X-Forwarded-Proto on every request (nginx: proxy_set_header
# X-Forwarded-Proto $scheme), overwriting whatever the client sent: with this setting Django
# believes the header from anyone who can reach the server, so bind where only the proxy can
# (loopback, a unix socket). runprefork's own FORWARDED_ALLOW_IPS check (default 127.0.0.1
# and ::1, and every unix socket peer) sets wsgi.url_scheme from the same header.
if env_bool("DJANGO_BEHIND_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Peers whose X-Forwarded-For the /api/client/ view believes: the proxy on this host, over
# TCP loopback or a unix socket (REMOTE_ADDR is empty there).
DEMO_TRUSTED_PROXIES = ["127.0.0.1", "::1", "", *env_list("DJANGO_TRUSTED_PROXIES")]

# LOGGING is left to Django's defaults: runprefork wires its own loggers
# (django_prefork.error and django_prefork.access) after Django's LOGGING is applied.

# The server. Keys are gunicorn's setting names, upper-cased; see docs/settings.md.
# Precedence: defaults < PREFORK < environment (WEB_CONCURRENCY, PORT) < command line.
PREFORK = {
    "BIND": "127.0.0.1:8000",  # a list for several: ["127.0.0.1:8000", "unix:/run/demo.sock"]
    "WORKERS": 2,  # processes; each serves one request at a time with the sync worker
    "WORKER_CLASS": "sync",
    "TIMEOUT": 30,  # seconds a worker may stay silent before the master kills it
    "GRACEFUL_TIMEOUT": 30,  # seconds workers get to finish requests on TERM/HUP
    "KEEPALIVE": 2,
    "MAX_REQUESTS": 0,  # 0: never recycle; e.g. 1000 to restart a worker after 1000 requests
    "ACCESSLOG": "-",  # "-" is stdout; None turns the access log off
    "LOGLEVEL": "info",
}
