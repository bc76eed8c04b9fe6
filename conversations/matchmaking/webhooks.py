"""POST /api/v1/webhooks/matchmaking/: an external matchmaker hands a user to the bot.

The body is signed (DESIGN.md section 3):

    Chatbase-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256("<t>.<raw body>", MATCHMAKING_WEBHOOK_SECRET)>

Older (or further in the future) than MATCHMAKING_WEBHOOK_TOLERANCE_SECONDS is
refused; several v1 values may be sent while a secret is rotated. The body's
`event_id` is recorded once (crm's webhook ledger): a replay answers 200 and does
nothing. `chatbot_fallback_triggered` starts a bot session for `user_id` with its
`profile` (optional `template`, and `bot`: a bot's public key, else MATCHMAKING_BOT);
when that user has a /ws/match/ socket open with us, it gets `bot.connected`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from chatbase.core import metrics
from chatbase.core.errors import ChatbaseError, Conflict, NotAuthenticated, ValidationFailed
from conversations.matchmaking import queue, services
from crm.services import webhook_event_finish, webhook_event_record

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Chatbase-Signature"
FALLBACK_EVENT = "chatbot_fallback_triggered"


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header a sender computes (used by the tests and shown in docs/matchmaking.md)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def signature_verify(*, header: str | None, body: bytes, secret: str, tolerance: int, now: float | None = None) -> None:
    """Raise NotAuthenticated unless the header signs this exact body, recently."""
    if not header:
        raise NotAuthenticated(f"The {SIGNATURE_HEADER} header is missing.", code="invalid_signature")
    timestamp, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    try:
        sent = int(timestamp or "")
    except ValueError:
        raise NotAuthenticated("The signature has no valid timestamp (t=).", code="invalid_signature") from None
    now = time.time() if now is None else now
    if abs(now - sent) > tolerance:
        raise NotAuthenticated("The signature's timestamp is too old (or in the future).", code="stale_signature")
    expected = hmac.new(secret.encode(), f"{sent}.".encode() + body, hashlib.sha256).hexdigest()
    # Every candidate is compared in constant time; any may match (secret rotation).
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
        raise NotAuthenticated("The signature does not match.", code="invalid_signature")


def _notify_socket(channel_name: str, conversation_id: int) -> None:
    async_to_sync(get_channel_layer().send)(
        channel_name, {"type": "match.fallback", "conversation_id": conversation_id}
    )


def fallback_event_process(*, payload: dict) -> dict:
    """Start the user's bot session; tell their open socket, if any, after commit."""
    user_id = services.user_id_clean(payload.get("user_id"))
    bot_key = payload.get("bot")
    if bot_key is not None and not isinstance(bot_key, str):
        raise ValidationFailed("bot: a bot's public key (string).")
    template = payload.get("template")
    if template is not None and not isinstance(template, str):
        raise ValidationFailed("template: a template slug (string).")
    with transaction.atomic():
        session = services.session_start(
            user_id=user_id,
            profile=payload.get("profile"),
            template=template,
            bot=services.matchmaking_bot(public_key=bot_key),
            source="webhook",
        )
        ticket = queue.live_ticket_for_user(user_id=user_id)
        if ticket is not None:
            channel_name, session_id = ticket.channel_name, session.pk
            transaction.on_commit(lambda: _notify_socket(channel_name, session_id), robust=True)
    metrics.match_fallbacks.labels("webhook").inc()
    return {"session_id": session.pk, "template": session.template.slug, "socket": ticket is not None}


class WebhookInputSerializer(serializers.Serializer):
    """For the API docs only: the view reads the raw body (the signature covers its bytes)."""

    event_id = serializers.CharField(max_length=200)
    type = serializers.CharField(help_text=f"`{FALLBACK_EVENT}`; other types are recorded and ignored.")
    user_id = serializers.CharField(max_length=200)
    profile = serializers.JSONField(required=False)
    template = serializers.SlugField(required=False)
    bot = serializers.CharField(required=False, help_text="A bot's public key; default MATCHMAKING_BOT.")


class WebhookOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(["processed", "ignored", "replay"])
    session_id = serializers.IntegerField(required=False)
    template = serializers.CharField(required=False)
    socket = serializers.BooleanField(required=False, help_text="The user had a /ws/match/ socket open.")


class MatchmakingWebhookApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=WebhookInputSerializer,
        responses={200: WebhookOutputSerializer},
        description="Signed with Chatbase-Signature (see docs/matchmaking.md); a replayed event_id is ignored.",
    )
    def post(self, request):
        if not settings.MATCHMAKING_WEBHOOK_SECRET:
            # 409, not 503: nothing is down, and a sender retrying cannot fix it.
            raise Conflict("Matchmaking webhooks are not configured.", code="not_configured")
        body = request.body  # the raw bytes the signature covers
        signature_verify(
            header=request.headers.get(SIGNATURE_HEADER),
            body=body,
            secret=settings.MATCHMAKING_WEBHOOK_SECRET,
            tolerance=settings.MATCHMAKING_WEBHOOK_TOLERANCE_SECONDS,
        )
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ValidationFailed("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("event_id"), (str, int)):
            raise ValidationFailed("event_id: required.", code="invalid")
        event_type = payload.get("type") if isinstance(payload.get("type"), str) else ""
        event, created = webhook_event_record(
            source="matchmaking", event_id=str(payload["event_id"]), event_type=event_type, payload=payload
        )
        if not created:
            return Response({"status": "replay"})
        if event_type != FALLBACK_EVENT:
            webhook_event_finish(event=event, status="ignored", error=f"unknown type {event_type[:50]!r}")
            return Response({"status": "ignored"})
        try:
            result = fallback_event_process(payload=payload)
        except ChatbaseError as exc:
            webhook_event_finish(event=event, status="failed", error=exc.detail)
            raise
        webhook_event_finish(event=event, status="processed")
        return Response({"status": "processed", **result})
