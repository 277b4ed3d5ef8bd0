"""A URLconf that serves MEDIA_URL itself (as a project behind no proxy might)."""

from django.urls import re_path
from django.views.static import serve

from testproject.urls import urlpatterns as base_patterns

urlpatterns = [
    *base_patterns,
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": "/nonexistent-media"}),
]
