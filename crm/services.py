"""Writes of the crm app."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from crm.models import WebhookEvent


def webhook_event_record(
    *, source: str, event_id: str, event_type: str = "", payload: dict | None = None
) -> tuple[WebhookEvent, bool]:
    """Record an inbound event once; returns (event, created).

    `created` is False for a replay: the caller answers 200 and does nothing more.
    The insert runs in its own savepoint so that a concurrent duplicate delivery
    (two requests racing on the unique constraint) is a replay, not a 500.
    """
    if not event_id:
        raise ValueError("event_id is required")
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                source=source, event_id=str(event_id)[:200], event_type=event_type[:100], payload=payload or {}
            )
        return event, True
    except IntegrityError:
        return WebhookEvent.objects.get(source=source, event_id=str(event_id)[:200]), False


@transaction.atomic
def webhook_event_finish(*, event: WebhookEvent, status: str, error: str = "") -> WebhookEvent:
    """Mark a recorded event processed, ignored or failed (with the reason)."""
    event.status = status
    event.error = error[:5000]
    event.attempts += 1
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "error", "attempts", "processed_at"])
    return event
