from testproject.settings import *  # noqa: F403

PREFORK = {"WORKER": 2}
