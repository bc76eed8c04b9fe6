"""Celery tasks of the crm app: thin wrappers that take ids and call a service."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=50, time_limit=60)
def hubspot_event_process_task(event_pk: int) -> str:
    from crm.services.webhooks import hubspot_event_process

    return hubspot_event_process(event_pk=event_pk)


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=110, time_limit=120)
def rules_run_task(event: str, owner_id: int, payload: dict) -> int:
    from crm.services.rules import rules_run

    return len(rules_run(event=event, owner_id=owner_id, payload=payload))
