"""URL configuration for demo_project."""

from django.contrib import admin
from django.urls import path

from demo_project.pages import views

urlpatterns = [
    path("", views.home, name="home"),
    path("api/info/", views.api_info, name="api-info"),
    path("sleep/", views.sleep, name="sleep"),
    path("health/", views.health, name="health"),
    path("api/client/", views.client, name="api-client"),
    path("download/", views.download, name="download"),
    path("upload/", views.upload, name="upload"),
    path("admin/", admin.site.urls),
]
