from django.urls import path

from testproject import views

urlpatterns = [
    path("hello", views.hello),
    path("echo", views.echo),
    path("upload", views.upload),
    path("upload_stream", views.upload_stream),
    path("upload_in_a_cycle", views.upload_in_a_cycle),
    path("live_bodies", views.live_bodies),
    path("upload_files", views.upload_files),
    path("download", views.download),
    path("stream", views.stream),
    path("stream_fail", views.stream_fail),
    path("error", views.error),
    path("sleep", views.sleep),
    path("pid", views.pid),
    path("log", views.log_lines),
    path("environ", views.environ),
    path("file", views.file_response),
    path("db_connection", views.db_connection),
    path("exhaust_fds", views.exhaust_fds),
    path("slow_stream", views.slow_stream),
]
