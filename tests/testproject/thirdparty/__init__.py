"""A stand-in for a third-party app (Wagtail, say) that creates its logger at import time.

settings_logging lists it in INSTALLED_APPS, so Django imports it while it populates the apps,
after LOGGING was applied: a second application of LOGGING in the same process would disable
this logger (disable_existing_loggers defaults to True).
"""

import logging

log = logging.getLogger("thirdparty")
