from testproject.settings import *  # noqa: F403

WSGI_APPLICATION = "testproject.broken_wsgi.application"
