"""Gmail and Google Calendar notifications: record, then ingest into the owner's chosen bot.

The webhook views only verify and record (WebhookEvent, so a replay is a no-op) and
enqueue; a Celery task reads what changed from Google's API and adds each new mail
or event as a document of the GoogleSync's bot, through the knowledge-base pipeline
(bots.services.documents), so the bot can search it like any other document.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import uuid
from functools import partial

from django.conf import settings
from django.db import models, transaction

from bots.models import Document
from bots.services.documents import document_create, document_delete
from chatbase.core.errors import NotAuthenticated, ValidationFailed
from crm import google
from crm.models import GoogleSync, WebhookEvent
from crm.services.rules import rules_emit
from crm.services.webhooks import webhook_event_finish, webhook_event_record

logger = logging.getLogger(__name__)
MAX_DOCUMENT_CHARS = 100_000


# --- set-up -------------------------------------------------------------------------


def google_sync_watch(*, sync: GoogleSync) -> GoogleSync:
    """Ask Google to push the owner's new mail and calendar changes to us (again: watches expire).

    The Calendar channel gets a new random id and secret token each time; the old
    channel's notifications stop matching, so a leaked token dies with its channel.
    """
    token = google.access_token_for(sync.owner)
    fields = ["last_error", "updated_at"]
    if sync.gmail_enabled:
        if not settings.GOOGLE_PUBSUB_TOPIC:
            raise google.GoogleError("GOOGLE_PUBSUB_TOPIC is not set.")
        watched = google.gmail_watch(token, topic=settings.GOOGLE_PUBSUB_TOPIC)
        sync.gmail_address = watched["emailAddress"]
        fields.append("gmail_address")
        if not sync.gmail_history_id:
            sync.gmail_history_id = watched["historyId"]
            fields.append("gmail_history_id")
    if sync.calendar_enabled:
        if not settings.GOOGLE_CALENDAR_WEBHOOK_URL:
            raise google.GoogleError("GOOGLE_CALENDAR_WEBHOOK_URL is not set.")
        channel_id, channel_token = uuid.uuid4().hex, secrets.token_urlsafe(32)
        channel = google.calendar_watch(
            token,
            calendar_id=sync.calendar_id,
            channel_id=channel_id,
            address=settings.GOOGLE_CALENDAR_WEBHOOK_URL,
            token=channel_token,
        )
        sync.calendar_channel_id, sync.calendar_channel_token = channel_id, channel_token
        sync.calendar_resource_id = channel.get("resourceId", "")
        fields += ["calendar_channel_id", "calendar_channel_token", "calendar_resource_id"]
    sync.last_error = ""
    with transaction.atomic():
        sync.save(update_fields=fields)
    return sync


def google_syncs_renew() -> dict[str, int]:
    """Renew every watch (beat, daily): Gmail and Calendar watches last about a week."""
    counts = {"renewed": 0, "failed": 0}
    for sync in GoogleSync.objects.select_related("owner").filter(
        models.Q(gmail_enabled=True) | models.Q(calendar_enabled=True)
    ):
        try:
            google_sync_watch(sync=sync)
            counts["renewed"] += 1
        except google.GoogleError as exc:
            GoogleSync.objects.filter(pk=sync.pk).update(last_error=f"Renewing the watch failed: {exc}"[:2000])
            counts["failed"] += 1
    return counts


# --- Gmail --------------------------------------------------------------------------


def gmail_push_receive(*, body: object) -> dict:
    """A verified Pub/Sub push: {"message": {"data": base64 JSON, "messageId"}, "subscription"}."""
    from crm.tasks import gmail_notification_process_task

    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict) or not message.get("messageId") or not message.get("data"):
        raise ValidationFailed(
            "Expected a Pub/Sub push with message.data and message.messageId.", code="invalid_payload"
        )
    try:
        data = json.loads(base64.b64decode(message["data"], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("message.data is not base64-encoded JSON.", code="invalid_payload") from exc
    if not isinstance(data, dict) or not data.get("emailAddress") or not data.get("historyId"):
        raise ValidationFailed("The notification needs emailAddress and historyId.", code="invalid_payload")
    with transaction.atomic():
        event, created = webhook_event_record(
            source=WebhookEvent.Source.GMAIL,
            event_id=str(message["messageId"]),
            event_type="gmail.history",
            payload={"emailAddress": str(data["emailAddress"]), "historyId": str(data["historyId"])},
        )
        if created:
            transaction.on_commit(partial(gmail_notification_process_task.delay, event.pk), robust=True)
    return {"received": int(created), "replays": int(not created)}


def _document_exists(bot_id: int, key: str, value: str) -> Document | None:
    return Document.objects.filter(bot_id=bot_id, **{f"metadata__{key}": value}).first()


def gmail_notification_process(*, event_pk: int) -> str:
    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is None or event.status != WebhookEvent.Status.RECEIVED:
        return "skipped"
    address, history_id = event.payload["emailAddress"], event.payload["historyId"]
    sync = GoogleSync.objects.select_related("owner", "bot").filter(gmail_address__iexact=address).first()
    if sync is None or not sync.gmail_enabled:
        webhook_event_finish(event=event, status=WebhookEvent.Status.IGNORED, error=f"no Gmail sync for {address}")
        return "ignored"
    if not sync.gmail_history_id:
        # Nothing to compare with yet: this notification is where reading starts.
        _gmail_advance(sync, history_id)
        webhook_event_finish(event=event, status=WebhookEvent.Status.PROCESSED, error="history start recorded")
        return "started"
    try:
        token = google.access_token_for(sync.owner)
        ids, latest = google.gmail_added_message_ids(token, start_history_id=sync.gmail_history_id)
        added = 0
        for message_id in ids[: settings.GOOGLE_MAX_ITEMS_PER_NOTIFICATION]:
            if _document_exists(sync.bot_id, "gmail_message_id", message_id):
                continue
            _gmail_ingest(sync, google.gmail_message(token, message_id))
            added += 1
    except google.GoogleError as exc:
        _record_google_error(sync, event, exc)
        raise
    _gmail_advance(sync, latest)
    webhook_event_finish(event=event, status=WebhookEvent.Status.PROCESSED, error=f"{added} message(s) ingested")
    return "processed"


@transaction.atomic
def _gmail_advance(sync: GoogleSync, history_id: str) -> None:
    sync.gmail_history_id = history_id
    sync.last_error = ""
    sync.save(update_fields=["gmail_history_id", "last_error", "updated_at"])


@transaction.atomic
def _gmail_ingest(sync: GoogleSync, message: dict) -> Document:
    text = f"From: {message['from']}\nDate: {message['date']}\nSubject: {message['subject']}\n\n{message['text']}"
    document = document_create(
        bot=sync.bot,
        title=f"E-mail: {message['subject']}"[:300],
        text=text[:MAX_DOCUMENT_CHARS],
        metadata={"source": "gmail", "gmail_message_id": message["id"]},
    )
    rules_emit(
        event="gmail.message.received",
        owner_id=sync.owner_id,
        payload={"bot_id": sync.bot_id, "document_id": document.pk, "gmail_message_id": message["id"]},
    )
    return document


def _record_google_error(sync: GoogleSync, event: WebhookEvent, exc: Exception) -> None:
    with transaction.atomic():
        sync.last_error = str(exc)[:2000]
        sync.save(update_fields=["last_error", "updated_at"])
    logger.warning("Google sync of owner %s: %s", sync.owner_id, exc)


# --- Calendar -----------------------------------------------------------------------


def calendar_push_receive(*, headers) -> dict:
    """A Calendar push notification, authenticated by the channel's secret token."""
    from crm.tasks import calendar_notification_process_task

    channel_id = headers.get("X-Goog-Channel-ID", "")
    token = headers.get("X-Goog-Channel-Token", "")
    number = headers.get("X-Goog-Message-Number", "")
    resource_id = headers.get("X-Goog-Resource-ID", "")
    state = headers.get("X-Goog-Resource-State", "")
    sync = GoogleSync.objects.filter(calendar_channel_id=channel_id).first() if channel_id else None
    expected = sync.calendar_channel_token if sync is not None else ""
    # Compared in constant time, and also when no channel matched (against a dummy),
    # so that timing tells nothing about which channel ids exist.
    matches = hmac.compare_digest((expected or "\x00no-channel").encode(), token.encode())
    if sync is None or not expected or not matches:
        raise NotAuthenticated("Unknown channel or wrong X-Goog-Channel-Token.", code="invalid_signature")
    if sync.calendar_resource_id and resource_id != sync.calendar_resource_id:
        raise NotAuthenticated("The resource id does not belong to this channel.", code="invalid_signature")
    if not number.isdigit():
        raise ValidationFailed("X-Goog-Message-Number is required.", code="invalid_payload")
    with transaction.atomic():
        event, created = webhook_event_record(
            source=WebhookEvent.Source.CALENDAR,
            event_id=f"{channel_id}:{number}",
            event_type=f"calendar.{state or 'unknown'}",
            payload={"sync_id": sync.pk, "resource_state": state, "resource_id": resource_id},
        )
        if created:
            transaction.on_commit(partial(calendar_notification_process_task.delay, event.pk), robust=True)
    return {"received": int(created), "replays": int(not created)}


def calendar_notification_process(*, event_pk: int) -> str:
    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is None or event.status != WebhookEvent.Status.RECEIVED:
        return "skipped"
    sync = GoogleSync.objects.select_related("owner", "bot").filter(pk=event.payload.get("sync_id")).first()
    if sync is None or not sync.calendar_enabled or event.payload.get("resource_state") == "sync":
        # "sync" only announces a new channel; there is nothing to read yet.
        webhook_event_finish(event=event, status=WebhookEvent.Status.IGNORED)
        return "ignored"
    try:
        token = google.access_token_for(sync.owner)
        try:
            changed, next_token = google.calendar_changed_events(
                token, calendar_id=sync.calendar_id, sync_token=sync.calendar_sync_token
            )
        except google.GoogleError as exc:
            if exc.status != 410:
                raise
            # Google dropped the sync token: read everything upcoming again.
            changed, next_token = google.calendar_changed_events(token, calendar_id=sync.calendar_id, sync_token="")
    except google.GoogleError as exc:
        _record_google_error(sync, event, exc)
        raise
    ingested = sum(_calendar_ingest(sync, item) for item in changed[: settings.GOOGLE_MAX_ITEMS_PER_NOTIFICATION])
    with transaction.atomic():
        sync.calendar_sync_token = next_token or ""
        sync.last_error = ""
        sync.save(update_fields=["calendar_sync_token", "last_error", "updated_at"])
    webhook_event_finish(event=event, status=WebhookEvent.Status.PROCESSED, error=f"{ingested} event(s) ingested")
    return "processed"


def _event_text(item: dict) -> str:
    start = item.get("start", {}).get("dateTime") or item.get("start", {}).get("date", "")
    end = item.get("end", {}).get("dateTime") or item.get("end", {}).get("date", "")
    lines = [f"Event: {item.get('summary', '(no title)')}", f"When: {start} to {end}"]
    if item.get("location"):
        lines.append(f"Where: {item['location']}")
    if item.get("description"):
        lines.append("")
        lines.append(item["description"])
    return "\n".join(lines)


@transaction.atomic
def _calendar_ingest(sync: GoogleSync, item: dict) -> bool:
    """Add, replace or remove the document of one changed event; True when one was written."""
    event_id = item.get("id")
    if not event_id:
        return False
    existing = _document_exists(sync.bot_id, "calendar_event_id", event_id)
    if existing is not None and existing.metadata.get("calendar_updated") == item.get("updated"):
        return False
    if existing is not None:
        document_delete(document=existing)
    if item.get("status") == "cancelled":
        return False
    document = document_create(
        bot=sync.bot,
        title=f"Calendar: {item.get('summary', '(no title)')}"[:300],
        text=_event_text(item)[:MAX_DOCUMENT_CHARS],
        metadata={"source": "google_calendar", "calendar_event_id": event_id, "calendar_updated": item.get("updated")},
    )
    if existing is None:
        rules_emit(
            event="calendar.event.created",
            owner_id=sync.owner_id,
            payload={"bot_id": sync.bot_id, "document_id": document.pk, "calendar_event_id": event_id},
        )
    return True
