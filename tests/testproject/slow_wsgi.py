"""The test project's application, slow to import, as a large project's is (Wagtail's
takes a good part of a second): a worker spends that long loading it."""

import time

time.sleep(0.3)

from testproject.wsgi import application  # noqa: E402, F401
