"""URL configuration for demo_project."""

from django.contrib import admin
from django.urls import path

from demo_project.pages import views

urlpatterns = [
    path("", views.home, name="home"),
    path("api/info/", views.api_info, name="api-info"),
    path("sleep/", views.sleep, name="sleep"),
    path("health/", views.health, name="health"),
    path("admin/", admin.site.urls),
]
