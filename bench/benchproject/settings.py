"""Settings of the benchmark project: a realistic default Django stack, no database traffic.

The middleware is `startproject`'s default list, so the "Django hello" rows measure what a
new project pays per request, not a stripped-down Django that no one deploys. Nothing here
touches the database (sessions and auth are lazy), so the rows measure the server and the
request cycle, not SQLite.
"""

from __future__ import annotations

SECRET_KEY = "django-prefork-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchproject.urls"
WSGI_APPLICATION = "benchproject.wsgi.application"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_prefork",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The 1 MB upload row reads request.body: keep it under Django's in-memory limit explicitly.
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
# Both servers log errors only at their defaults; neither writes an access log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
# Options come from the command line of bench/run.py, identical for both servers.
PREFORK: dict = {}
