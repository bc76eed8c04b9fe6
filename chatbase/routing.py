"""Websocket URL routes of every app."""

from django.urls import path, re_path

from chatbase.core.consumers import NotFoundConsumer, PingConsumer
from conversations.routing import websocket_urlpatterns as conversation_routes

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    *conversation_routes,
    # Must stay last.
    re_path(r"^", NotFoundConsumer.as_asgi()),
]
