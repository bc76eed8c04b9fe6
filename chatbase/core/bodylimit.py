"""A hard cap on HTTP request bodies, before Django reads them.

Django bounds what it parses in memory (DATA_UPLOAD_MAX_MEMORY_SIZE) but spools any
upload to disk without a total limit, and Daphne sets none: a client could fill the
disk with one endless multipart request. This ASGI middleware answers 413 as soon as
the declared Content-Length, or the bytes actually received for a chunked body,
pass MAX_REQUEST_BODY_BYTES.
"""

from __future__ import annotations

import json

from django.conf import settings


class _BodyTooLarge(Exception):
    pass


async def _send_413(send) -> None:
    body = json.dumps({"detail": "The request body is too large.", "code": "too_large"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MAX_REQUEST_BODY_BYTES
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # Daphne refuses malformed lengths itself
            if too_large:
                return await _send_413(send)

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_413(send)
