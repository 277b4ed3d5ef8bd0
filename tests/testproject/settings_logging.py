"""A project LOGGING without disable_existing_loggers (Python's default, True), as many have."""

from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "testproject.thirdparty"]  # noqa: F405
LOGGING = {
    "version": 1,
    "formatters": {"named": {"format": "PROJECT-LOG %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "named"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
