"""Websocket URL routes of every app."""

from django.urls import path, re_path

from chatbase.core.consumers import NotFoundConsumer, PingConsumer

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    # Must stay last.
    re_path(r"^", NotFoundConsumer.as_asgi()),
]
