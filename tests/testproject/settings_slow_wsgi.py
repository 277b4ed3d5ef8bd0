"""The test settings with an application that takes 0.3 s to import in each worker."""

from testproject.settings import *  # noqa: F403

WSGI_APPLICATION = "testproject.slow_wsgi.application"
