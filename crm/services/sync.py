"""The HubSpot sync outbox: writing jobs with the lead change, carrying them out, recovering.

Guarantees (docs/crm.md): a job is committed with the lead change that needs it; it
is retried until HubSpot takes it or refuses it for good; and running a job twice
(a redelivered task, a worker that died after HubSpot answered) writes nothing twice:
contacts are upserted by e-mail, a note is looked for on the contact by its marker
before it is created, and a deal is looked for by name on the contact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from crm import hubspot
from crm.models import SyncJob
from crm.services.hubspot import HubSpotNotConnected, hubspot_client_for

logger = logging.getLogger(__name__)

# Lead fields that HubSpot's contact mirrors (and consent, which may allow a sync): a change is synced.
SYNCED_LEAD_FIELDS = frozenset(
    {
        "email",
        "name",
        "phone",
        "company",
        "score",
        "nearest_area",
        "nearest_area_id",
        "distance_km",
        "status",
        "consent",
    }
)
SWEEP_BATCH = 500
NOTE_MAX_CHARS = 60_000


class Unsyncable(Exception):
    """The job cannot be carried out with the data it has (e.g. a lead without e-mail)."""


# --- enqueueing (inside the caller's transaction) ---------------------------------


def _schedule(job: SyncJob) -> None:
    from crm.tasks import sync_job_process_task

    # robust: a broker that is down must not undo the lead change; the sweeper will
    # find the pending job and enqueue it again.
    transaction.on_commit(partial(sync_job_process_task.delay, job.pk), robust=True)


def contact_properties(lead) -> dict:
    first, _, last = (lead.name or "").strip().partition(" ")
    properties = {
        "email": lead.email,
        "firstname": first,
        "lastname": last.strip(),
        "phone": lead.phone,
        "company": lead.company,
        settings.HUBSPOT_SCORE_PROPERTY: str(lead.score),
        settings.HUBSPOT_AREA_PROPERTY: lead.nearest_area.name if lead.nearest_area_id else "",
    }
    # An empty value would erase what sales typed into HubSpot; only send what we know.
    return {key: value for key, value in properties.items() if value != "" or key == settings.HUBSPOT_AREA_PROPERTY}


@transaction.atomic
def sync_job_enqueue(*, lead, kind: str, key: str, payload: dict | None = None) -> tuple[SyncJob, bool]:
    job, created = SyncJob.objects.get_or_create(
        idempotency_key=key[:200], defaults={"lead": lead, "kind": kind, "payload": payload or {}}
    )
    if created:
        _schedule(job)
    return job, created


@transaction.atomic
def sync_job_enqueue_contact(*, lead) -> SyncJob | None:
    """Ask for the contact to be brought up to date; None when it cannot be (no e-mail, no contact).

    A pending job of the lead is reused: it reads the lead when it runs, so one job
    carries any number of changes made before it starts.
    """
    if not lead.email and not lead.hubspot_id:
        return None
    pending = SyncJob.objects.filter(lead=lead, kind=SyncJob.Kind.CONTACT_UPSERT, status=SyncJob.Status.PENDING)
    job = pending.order_by("id").first()
    if job is not None:
        return job
    fingerprint = hashlib.sha256(json.dumps(contact_properties(lead), sort_keys=True).encode()).hexdigest()[:24]
    job, created = sync_job_enqueue(lead=lead, kind=SyncJob.Kind.CONTACT_UPSERT, key=f"contact:{lead.pk}:{fingerprint}")
    if not created and job.status == SyncJob.Status.DONE:
        # The lead went back to a state synced before (A -> B -> A): HubSpot has B now.
        _reset(job)
    return job


def sync_job_enqueue_deal(*, lead) -> SyncJob:
    return sync_job_enqueue(lead=lead, kind=SyncJob.Kind.DEAL, key=f"deal:{lead.pk}")[0]


def sync_job_enqueue_note(*, lead, conversation_id: int, summary: str) -> SyncJob:
    return sync_job_enqueue(
        lead=lead,
        kind=SyncJob.Kind.NOTE,
        key=f"note:{conversation_id}:{lead.pk}",
        payload={"conversation_id": conversation_id, "summary": summary[:NOTE_MAX_CHARS]},
    )[0]


def _reset(job: SyncJob) -> None:
    job.status = SyncJob.Status.PENDING
    job.attempts = 0
    job.next_attempt_at = None
    job.locked_at = None
    job.save(update_fields=["status", "attempts", "next_attempt_at", "locked_at", "updated_at"])
    _schedule(job)


@transaction.atomic
def sync_job_retry(*, job: SyncJob) -> SyncJob:
    """Staff's "retry" of a failed job (after fixing the cause)."""
    job = SyncJob.objects.select_for_update().get(pk=job.pk)
    if job.status in (SyncJob.Status.FAILED, SyncJob.Status.PENDING):
        _reset(job)
    return job


# --- processing -------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessOutcome:
    status: str
    retry_in: float | None = None


def retry_delay(*, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than HubSpot's Retry-After."""
    ceiling = min(
        settings.HUBSPOT_SYNC_BACKOFF_MAX_SECONDS, settings.HUBSPOT_SYNC_BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1)
    )
    # "Equal jitter": half the step guaranteed, half random, so that jobs throttled
    # together do not all come back in the same second.
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, 1))
    return round(delay, 3)


@transaction.atomic
def _claim(job_id: int) -> SyncJob | None:
    # skip_locked: another worker holding the row is processing it; this copy of the
    # task (a duplicate delivery, a sweeper re-enqueue) has nothing to do.
    job = SyncJob.objects.select_for_update(skip_locked=True).filter(pk=job_id).first()
    if job is None or job.status != SyncJob.Status.PENDING:
        return None
    job.status = SyncJob.Status.IN_PROGRESS
    job.locked_at = timezone.now()
    job.attempts += 1
    job.save(update_fields=["status", "locked_at", "attempts", "updated_at"])
    return job


@transaction.atomic
def _finish(job: SyncJob, *, status: str, error: str = "", object_id: str = "", retry_in: float | None = None) -> None:
    job.status = status
    job.locked_at = None
    job.last_error = error[:5000] if error else ("" if status == SyncJob.Status.DONE else job.last_error)
    job.next_attempt_at = timezone.now() + timedelta(seconds=retry_in) if retry_in is not None else None
    fields = ["status", "locked_at", "last_error", "next_attempt_at", "updated_at"]
    if object_id:
        job.hubspot_object_id = object_id
        fields.append("hubspot_object_id")
    if status == SyncJob.Status.DONE:
        job.done_at = timezone.now()
        fields.append("done_at")
    job.save(update_fields=fields)


def sync_job_process(*, job_id: int) -> ProcessOutcome:
    job = _claim(job_id)
    if job is None:
        return ProcessOutcome("skipped")
    try:
        object_id = _execute(job)
    except hubspot.HubSpotRetryable as exc:
        return _retry_or_give_up(job, str(exc), retry_after=exc.retry_after)
    except (hubspot.HubSpotRejected, HubSpotNotConnected, Unsyncable) as exc:
        logger.warning("HubSpot sync job %s failed for good: %s", job.pk, exc)
        _finish(job, status=SyncJob.Status.FAILED, error=str(exc))
        return ProcessOutcome(SyncJob.Status.FAILED)
    except Exception as exc:
        # Ours, not HubSpot's (a database blip, a bug): retried like a 5xx, so that it
        # is not stuck in progress until the lease runs out, and fails after the last attempt.
        logger.exception("HubSpot sync job %s raised", job.pk)
        return _retry_or_give_up(job, f"{exc.__class__.__name__}: {exc}", retry_after=None)
    _finish(job, status=SyncJob.Status.DONE, object_id=object_id)
    return ProcessOutcome(SyncJob.Status.DONE)


def _retry_or_give_up(job: SyncJob, error: str, *, retry_after: float | None) -> ProcessOutcome:
    if job.attempts >= settings.HUBSPOT_SYNC_MAX_ATTEMPTS:
        _finish(job, status=SyncJob.Status.FAILED, error=f"Gave up after {job.attempts} attempts: {error}")
        return ProcessOutcome(SyncJob.Status.FAILED)
    delay = retry_delay(attempt=job.attempts, retry_after=retry_after)
    logger.warning("HubSpot sync job %s: %s; retrying in %.1f s", job.pk, error, delay)
    _finish(job, status=SyncJob.Status.PENDING, error=error, retry_in=delay)
    return ProcessOutcome(SyncJob.Status.PENDING, retry_in=delay)


def _execute(job: SyncJob) -> str:
    from leads.models import Lead

    lead = Lead.objects.select_related("bot__owner", "nearest_area").get(pk=job.lead_id)
    client = hubspot_client_for(owner=lead.bot.owner)
    if job.kind == SyncJob.Kind.CONTACT_UPSERT or not lead.hubspot_id:
        contact_id = _contact_upsert(client, lead)
    else:
        contact_id = lead.hubspot_id
    if job.kind == SyncJob.Kind.CONTACT_UPSERT:
        return contact_id
    if job.kind == SyncJob.Kind.NOTE:
        return _note(client, contact_id, job)
    return _deal(client, contact_id, lead)


def _contact_upsert(client: hubspot.HubSpotClient, lead) -> str:
    properties = contact_properties(lead)
    if lead.hubspot_id:
        try:
            client.contact_update(contact_id=lead.hubspot_id, properties=properties)
            return lead.hubspot_id
        except hubspot.HubSpotRejected as exc:
            # Deleted or merged away in HubSpot: find or create it again by e-mail.
            if exc.status != 404 or not lead.email:
                raise
    if not lead.email:
        raise Unsyncable("The lead has no e-mail address to find its HubSpot contact by.")
    contact_id = client.contact_upsert_by_email(email=lead.email, properties=properties)
    lead_hubspot_id_store(lead=lead, hubspot_id=contact_id)
    return contact_id


def lead_hubspot_id_store(*, lead, hubspot_id: str) -> None:
    """Remember the lead's contact id.

    A queryset update, not a lead service: the id is bookkeeping of the sync, not a
    change of the lead, and must not itself send lead_changed (and queue a sync).
    """
    type(lead).objects.filter(pk=lead.pk).update(hubspot_id=hubspot_id)
    lead.hubspot_id = hubspot_id


def note_marker(conversation_id: int) -> str:
    return f"[ChatBase conversation {conversation_id}]"


def _note(client: hubspot.HubSpotClient, contact_id: str, job: SyncJob) -> str:
    marker = note_marker(job.payload["conversation_id"])
    for note in client.contact_notes(contact_id=contact_id, limit=100):
        if marker in (note.get("properties", {}).get("hs_note_body") or ""):
            return str(note["id"])
    summary = job.payload.get("summary") or "(no summary)"
    return client.note_create(contact_id=contact_id, body=f"{summary}\n\n{marker}", timestamp=job.created_at)


def deal_name(lead) -> str:
    return f"{lead.name or lead.email or 'Lead'} (ChatBase lead {lead.pk})"


def _deal(client: hubspot.HubSpotClient, contact_id: str, lead) -> str:
    name = deal_name(lead)
    existing = client.deal_find(contact_id=contact_id, name=name)
    if existing:
        return existing
    properties = {
        "dealname": name,
        "pipeline": settings.HUBSPOT_DEAL_PIPELINE,
        "dealstage": settings.HUBSPOT_DEAL_STAGE,
    }
    return client.deal_create(contact_id=contact_id, properties=properties)


# --- recovery ---------------------------------------------------------------------


def sync_jobs_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue what was lost: jobs in progress past their lease, pending jobs never picked up."""
    now = now or timezone.now()
    lease_cutoff = now - timedelta(seconds=settings.HUBSPOT_SYNC_LEASE_SECONDS)
    lost_cutoff = now - timedelta(seconds=settings.HUBSPOT_SYNC_REQUEUE_AFTER_SECONDS)
    counts = {"stuck": 0, "lost": 0}
    requeued: list[int] = []
    with transaction.atomic():
        stuck = SyncJob.objects.select_for_update(skip_locked=True).filter(
            status=SyncJob.Status.IN_PROGRESS, locked_at__lt=lease_cutoff
        )
        for job in stuck[:SWEEP_BATCH]:
            job.status = SyncJob.Status.PENDING
            job.locked_at = None
            job.last_error = f"The worker was lost during attempt {job.attempts}; re-enqueued."
            job.save(update_fields=["status", "locked_at", "last_error", "updated_at"])
            _schedule(job)
            requeued.append(job.pk)
            counts["stuck"] += 1
    with transaction.atomic():
        lost = (
            SyncJob.objects.select_for_update(skip_locked=True)
            .filter(status=SyncJob.Status.PENDING, updated_at__lt=lost_cutoff)
            .exclude(next_attempt_at__gte=lost_cutoff)
            .exclude(pk__in=requeued)
        )
        for job in lost[:SWEEP_BATCH]:
            # Touch it, so the next sweep gives this enqueue time to be picked up.
            job.save(update_fields=["updated_at"])
            _schedule(job)
            counts["lost"] += 1
    return counts
