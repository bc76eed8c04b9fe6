"""Celery tasks of the leads app: take ids, re-fetch, call a service."""

from __future__ import annotations

from celery import shared_task

from conversations.models import Message
from leads import services
from leads.models import Lead


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def lead_message_process_task(message_id: int) -> int | None:
    message = (
        Message.objects.select_related("conversation", "conversation__bot")
        .filter(pk=message_id, role=Message.Role.USER)
        .first()
    )
    if message is None:
        return None
    lead = services.lead_message_process(message=message)
    return lead.pk if lead else None


# The lookup retries itself (geo.iplookup); this covers a database hiccup.
@shared_task(
    acks_late=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=50,
    time_limit=60,
)
def lead_geo_enrich_task(lead_id: int) -> bool:
    lead = Lead.objects.select_related("bot").filter(pk=lead_id).first()
    if lead is None:
        return False
    services.lead_geo_enrich(lead=lead)
    return True
