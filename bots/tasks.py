"""Celery tasks of the bots app: thin wrappers around bots.services.documents."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from bots.models import Document
from bots.services.documents import (
    TRANSIENT_ERRORS,
    document_ingest,
    document_recover_stuck,
    document_resync_due,
)

_INGEST_LIMIT = settings.DOCUMENT_INGEST_TIME_LIMIT_SECONDS


@shared_task(
    # A worker killed mid-ingestion (OOM, deploy) must hand the document back to the queue.
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=10,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=settings.DOCUMENT_INGEST_MAX_RETRIES,
    # The soft limit lets the service record the reason before the hard limit kills the task.
    soft_time_limit=max(1, _INGEST_LIMIT - min(60, _INGEST_LIMIT // 10)),
    time_limit=_INGEST_LIMIT,
)
def document_ingest_task(document_id: int, force: bool = False) -> None:
    document = Document.objects.select_related("bot").filter(pk=document_id).first()
    if document is None:
        return
    document_ingest(document=document, force=force)


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def documents_resync_due_task() -> int:
    return document_resync_due()


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def documents_recover_stuck_task() -> int:
    return document_recover_stuck()
