"""URLs of the benchmark project (one per row of bench/run.py and bench/scaling.py)."""

from __future__ import annotations

from django.urls import path

from benchproject import views

urlpatterns = [
    path("hello", views.hello),
    path("json", views.json_view),
    path("sleep", views.sleep),
    path("cpu", views.cpu),
    path("big", views.big),
    path("file", views.file),
    path("upload", views.upload),
    path("pid", views.pid),
]
