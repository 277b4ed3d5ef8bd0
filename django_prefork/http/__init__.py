"""The shared HTTP/1.1 core: one client connection, parsed with httptools, served over WSGI.

Workers use `ServerContext` and `HTTPConnection` from `django_prefork.http.connection`,
built with `CoreSettings.from_config(cfg)` (`django_prefork.http.settings`). Importing this
package imports nothing else, so leaf modules (`http.util`) can be used from anywhere
without pulling in the connection and its imports.
"""

from __future__ import annotations
