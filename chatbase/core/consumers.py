"""Base consumer with the one websocket error mapping, and /ws/ping/."""

from __future__ import annotations

import json
import logging
import uuid

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chatbase.core import metrics
from chatbase.core.errors import ChatbaseError, TooLong, ValidationFailed, ws_error_frame
from chatbase.core.logging import new_request_id, request_id_var

logger = logging.getLogger(__name__)

# A channel layer alias that is never configured: consumers that set it as their
# `channel_layer_alias` get no layer (channels returns None) and no receive loop on it.
NO_CHANNEL_LAYER = "none"


class JsonConsumer(AsyncJsonWebsocketConsumer):
    """Dispatches ``receive_json`` on ``type`` to ``handle_<type with . as _>``.

    Bad frames (not JSON, not an object, unknown ``type``) get an ``error`` frame
    with code ``invalid`` and the socket stays open. Any exception a handler
    raises is turned into an ``error`` frame by :func:`ws_error_frame`.
    """

    #: frame types this consumer accepts from the client
    accepted_types: frozenset[str] = frozenset()
    _counted = False

    async def dispatch(self, message):
        # Channels (4.2+) first runs close_old_connections() on its one thread-sensitive
        # thread for every message a consumer handles: under a burst of frames that single
        # thread became the queue every socket waited in (bench/matchmaking.py,
        # bench/streaming.py). Our consumers reach the ORM only through
        # database_sync_to_async or chatbase.core.db's db_call, which look after the
        # connection of the thread that runs each call, so the extra hop is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message):
        # One request id per connection: every log line of this socket carries it.
        request_id_var.set(f"ws-{new_request_id()}")
        await super().websocket_connect(message)

    async def accept(self, subprotocol=None, headers=None):
        await super().accept(subprotocol, headers)
        name = type(self).__name__
        metrics.websocket_connections.labels(name).inc()
        metrics.websocket_connections_total.labels(name).inc()
        self._counted = True

    async def websocket_disconnect(self, message):
        if self._counted:
            metrics.websocket_connections.labels(type(self).__name__).dec()
            self._counted = False
        await super().websocket_disconnect(message)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            await self.send_error(ValidationFailed("Frames must be JSON text."))
            return
        # Daphne refuses larger frames itself; this covers any other ASGI server.
        if len(text_data) > settings.WEBSOCKET_MAX_MESSAGE_BYTES:
            await self.send_error(TooLong("The frame is larger than 1 MiB."))
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error(ValidationFailed("Frames must be valid JSON."))
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error(ValidationFailed("A frame must be a JSON object with a string 'type'."))
            return
        frame_type = content["type"]
        if frame_type not in self.accepted_types:
            await self.send_error(ValidationFailed(f"Unknown frame type {frame_type[:50]!r}."))
            return
        handler = getattr(self, "handle_" + frame_type.replace(".", "_"))
        try:
            await handler(content)
        except ChatbaseError as exc:
            await self.send_error(exc)
        except Exception as exc:  # the socket survives a handler bug; the client is told
            await self.send_error(exc)

    async def send_error(self, exc: BaseException) -> None:
        await self.send_json(ws_error_frame(exc))


class PingConsumer(JsonConsumer):
    """Proves the channel layer works: a ping goes out through a group and comes back."""

    accepted_types = frozenset({"ping"})

    async def connect(self):
        self.group = f"ping.{uuid.uuid4().hex}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def handle_ping(self, content):
        payload = content.get("payload")
        if payload is not None and not isinstance(payload, (str, int, float, bool)):
            raise ValidationFailed("'payload' must be a scalar.")
        await self.channel_layer.group_send(self.group, {"type": "ping.echo", "payload": payload})

    async def ping_echo(self, event):
        await self.send_json({"type": "pong", "payload": event["payload"], "via": "channel_layer"})


class NotFoundConsumer(JsonConsumer):
    """Unknown websocket paths are refused at the handshake instead of erroring in the router."""

    async def connect(self):
        await self.close(code=4404)
