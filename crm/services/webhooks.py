"""Writes of the crm app."""

from __future__ import annotations

from functools import partial

from django.db import IntegrityError, transaction
from django.utils import timezone

from chatbase.core import metrics
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
    except IntegrityError:
        metrics.webhook_events.labels(source, "replay").inc()
        return WebhookEvent.objects.get(source=source, event_id=str(event_id)[:200]), False
    metrics.webhook_events.labels(source, "accepted").inc()
    return event, True


@transaction.atomic
def webhook_event_finish(*, event: WebhookEvent, status: str, error: str = "") -> WebhookEvent:
    """Mark a recorded event processed, ignored or failed (with the reason)."""
    event.status = status
    event.error = error[:5000]
    event.attempts += 1
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "error", "attempts", "processed_at"])
    return event


# --- HubSpot --------------------------------------------------------------------

# HubSpot subscription types that are rule events (others are recorded and ignored).
HUBSPOT_RULE_EVENTS = {
    "contact.creation": "hubspot.contact.creation",
    "contact.propertyChange": "hubspot.contact.propertyChange",
}
MAX_HUBSPOT_EVENTS_PER_REQUEST = 1000


def hubspot_webhook_receive(*, events: object) -> dict:
    """Record each event of a verified HubSpot delivery and schedule its processing.

    HubSpot batches up to 100 events per request and retries a delivery that did
    not get a 2xx: an event already recorded is a replay and is not processed again.
    """
    from chatbase.core.errors import ValidationFailed
    from crm.tasks import hubspot_event_process_task

    if not isinstance(events, list) or not events:
        raise ValidationFailed("The body must be a non-empty JSON array of events.", code="invalid_payload")
    if len(events) > MAX_HUBSPOT_EVENTS_PER_REQUEST:
        raise ValidationFailed("Too many events in one request.", code="invalid_payload")
    for item in events:
        if not isinstance(item, dict) or not isinstance(item.get("eventId"), (int, str)) or item["eventId"] == "":
            raise ValidationFailed("Every event needs an eventId.", code="invalid_payload")
    new = replays = 0
    with transaction.atomic():
        for item in events:
            event, created = webhook_event_record(
                source=WebhookEvent.Source.HUBSPOT,
                event_id=str(item["eventId"]),
                event_type=str(item.get("subscriptionType", ""))[:100],
                payload=item,
            )
            if created:
                new += 1
                transaction.on_commit(partial(hubspot_event_process_task.delay, event.pk), robust=True)
            else:
                replays += 1
    return {"received": new, "replays": replays}


def hubspot_event_process(*, event_pk: int) -> str:
    """Turn one recorded HubSpot event into rule events for the owners of its portal."""
    from crm.models import HubSpotConnection
    from crm.services.rules import rules_emit

    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is None or event.status != WebhookEvent.Status.RECEIVED:
        return "skipped"
    rule_event = HUBSPOT_RULE_EVENTS.get(event.event_type)
    if rule_event is None:
        webhook_event_finish(event=event, status=WebhookEvent.Status.IGNORED, error="not a rule event")
        return "ignored"
    data = event.payload
    portal_id = str(data.get("portalId", ""))
    owner_ids = list(
        HubSpotConnection.objects.filter(portal_id=portal_id)
        .exclude(status=HubSpotConnection.Status.DISCONNECTED)
        .values_list("owner_id", flat=True)
    )
    with transaction.atomic():
        for owner_id in owner_ids:
            payload = {"contact_id": str(data.get("objectId", "")), "portal_id": portal_id}
            if data.get("propertyName"):
                payload.update(property=data["propertyName"], value=data.get("propertyValue"))
            lead_id = _lead_for_contact(owner_id=owner_id, contact_id=payload["contact_id"])
            if lead_id is not None:
                payload["lead_id"] = lead_id
            rules_emit(event=rule_event, owner_id=owner_id, payload=payload)
        if owner_ids:
            webhook_event_finish(event=event, status=WebhookEvent.Status.PROCESSED)
        else:
            webhook_event_finish(
                event=event, status=WebhookEvent.Status.IGNORED, error=f"no connection for portal {portal_id}"
            )
    return "processed" if owner_ids else "ignored"


def _lead_for_contact(*, owner_id: int, contact_id: str) -> int | None:
    from leads.models import Lead

    if not contact_id:
        return None
    return Lead.objects.filter(bot__owner_id=owner_id, hubspot_id=contact_id).values_list("pk", flat=True).first()


def webhook_event_fail(*, event_pk: int, error: str) -> None:
    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is not None:
        webhook_event_finish(event=event, status=WebhookEvent.Status.FAILED, error=error)
