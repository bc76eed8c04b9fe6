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


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, soft_time_limit=240, time_limit=300
)
def sync_job_process_task(self, job_id: int) -> str:
    """Carry out one outbox job; a retryable HubSpot error comes back after the backoff."""
    from crm.services.sync import sync_job_process

    outcome = sync_job_process(job_id=job_id)
    if outcome.retry_in is not None:
        # The job is pending again with next_attempt_at set: if this retry message is
        # lost, the sweeper finds the job and enqueues it.
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def sync_jobs_sweep_task() -> dict:
    from crm.services.sync import sync_jobs_sweep

    return sync_jobs_sweep()


def _google_notification(task, process, event_pk: int) -> str:
    from crm.google import GoogleError
    from crm.services.webhooks import webhook_event_fail

    try:
        return process(event_pk=event_pk)
    except GoogleError as exc:
        if exc.status is None or exc.status == 429 or exc.status >= 500:
            raise task.retry(countdown=30 * 2**task.request.retries, exc=exc) from exc
        # Refused for good (revoked access, deleted calendar): shown on the event in admin.
        webhook_event_fail(event_pk=event_pk, error=str(exc))
        return "failed"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5, soft_time_limit=240, time_limit=300)
def gmail_notification_process_task(self, event_pk: int) -> str:
    from crm.services.google import gmail_notification_process

    return _google_notification(self, gmail_notification_process, event_pk)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5, soft_time_limit=240, time_limit=300)
def calendar_notification_process_task(self, event_pk: int) -> str:
    from crm.services.google import calendar_notification_process

    return _google_notification(self, calendar_notification_process, event_pk)


@shared_task(acks_late=True, soft_time_limit=540, time_limit=600)
def google_syncs_renew_task() -> dict:
    from crm.services.google import google_syncs_renew

    return google_syncs_renew()
