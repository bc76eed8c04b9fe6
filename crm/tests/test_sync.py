"""The HubSpot outbox against the fake HubSpot: exact requests, one contact per lead, retries, recovery."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from bots.tests.factories import BotFactory
from conversations.models import Conversation
from conversations.services import conversation_end, conversation_start
from crm.models import HubSpotConnection, SyncJob
from crm.services import sync as sync_services
from crm.services.sync import sync_job_process, sync_jobs_sweep
from crm.tasks import sync_job_process_task
from geo.models import ServiceArea
from leads.models import Lead
from leads.services import lead_capture, lead_status_change

pytestmark = pytest.mark.django_db
UPSERT = "/crm/v3/objects/contacts/batch/upsert"


class WorkerKilled(BaseException):
    """Stands for the worker process dying: nothing after it runs, nothing catches it."""


@pytest.fixture
def bot(owner):
    return BotFactory(owner=owner)


def capture(bot, **details):
    details = {"email": "priya@example.com", "name": "Priya Raman", "source": "widget", **details}
    return lead_capture(bot=bot, **details)


def upserts(fake):
    return fake.calls("POST", UPSERT)


def test_the_outbox_row_commits_with_the_lead_or_not_at_all(fake_hubspot, bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        lead = capture(bot)
    job = SyncJob.objects.get()
    assert (job.lead_id, job.kind, job.status) == (lead.pk, "contact_upsert", "pending")
    assert len([c for c in callbacks if "sync_job_process_task" in repr(c)]) == 1
    # Rolled back with the change: no lead, no job.
    with pytest.raises(RuntimeError), transaction.atomic():
        capture(bot, email="other@example.com")
        assert SyncJob.objects.count() == 2
        raise RuntimeError("the request failed after the lead was written")
    assert SyncJob.objects.count() == 1 and Lead.objects.count() == 1
    assert fake_hubspot.requests == []  # nothing is sent before commit


def test_a_lead_becomes_one_contact_with_its_score_and_area(fake_hubspot, bot, django_capture_on_commit_callbacks):
    area, _ = ServiceArea.objects.get_or_create(
        name="Adyar", city="Chennai", defaults={"latitude": 13.0, "longitude": 80.25}
    )
    with django_capture_on_commit_callbacks(execute=True):
        lead = capture(bot, phone="+919876543210", company="Acme")
        Lead.objects.filter(pk=lead.pk).update(nearest_area=area, score=35)
    job = SyncJob.objects.get()
    assert job.status == "done" and job.attempts == 1
    [request] = upserts(fake_hubspot)
    assert request.authorization == "Bearer pat-test-token"
    assert request.body == {
        "inputs": [
            {
                "idProperty": "email",
                "id": "priya@example.com",
                "properties": {
                    "email": "priya@example.com",
                    "firstname": "Priya",
                    "lastname": "Raman",
                    "phone": "+919876543210",
                    "company": "Acme",
                    # Read when the job runs: the score and area set before commit are sent.
                    "chatbase_score": "35",
                    "chatbase_nearest_area": "Adyar",
                },
            }
        ]
    }
    lead.refresh_from_db()
    contact = fake_hubspot.contact_by_email("priya@example.com")
    assert lead.hubspot_id == contact["id"] == job.hubspot_object_id
    assert len(fake_hubspot.contacts) == 1

    # The score and the area change: the same contact is updated by its id.
    with django_capture_on_commit_callbacks(execute=True):
        from leads.services import lead_update

        lead = Lead.objects.get(pk=lead.pk)
        lead_update(lead=lead, company="Acme Textiles")
    patch = fake_hubspot.calls("PATCH", f"/crm/v3/objects/contacts/{lead.hubspot_id}")[-1]
    assert patch.body["properties"]["company"] == "Acme Textiles"
    assert patch.body["properties"]["chatbase_nearest_area"] == "Adyar"
    assert patch.body["properties"]["chatbase_score"] == str(Lead.objects.get(pk=lead.pk).score)
    assert len(fake_hubspot.contacts) == 1


def test_running_the_task_twice_makes_one_contact(fake_hubspot, bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot)
    job = SyncJob.objects.get()
    assert sync_job_process_task.apply(args=[job.pk]).get() == "skipped"
    # Even a second job for the same lead (a redelivered copy after the id was lost) upserts.
    Lead.objects.update(hubspot_id="")
    SyncJob.objects.filter(pk=job.pk).update(status="pending")
    assert sync_job_process_task.apply(args=[job.pk]).get() == "done"
    assert len(upserts(fake_hubspot)) == 2
    assert upserts(fake_hubspot)[0].body == upserts(fake_hubspot)[1].body
    assert len(fake_hubspot.contacts) == 1


def test_a_worker_dying_mid_task_is_recovered_by_the_sweeper_without_a_second_contact(
    fake_hubspot, bot, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        lead = capture(bot)
    job = SyncJob.objects.get()

    def die(**kwargs):
        raise WorkerKilled

    # HubSpot created the contact, then the worker died before we stored its id.
    monkeypatch.setattr(sync_services, "lead_hubspot_id_store", die)
    with pytest.raises(WorkerKilled):
        sync_job_process(job_id=job.pk)
    monkeypatch.undo()
    job.refresh_from_db()
    assert job.status == "in_progress" and job.locked_at is not None
    assert len(fake_hubspot.contacts) == 1

    # Within the lease nothing is taken back; past it, the sweeper re-enqueues.
    assert sync_jobs_sweep() == {"stuck": 0, "lost": 0}
    later = timezone.now() + timedelta(seconds=601)
    with django_capture_on_commit_callbacks(execute=True):
        assert sync_jobs_sweep(now=later) == {"stuck": 1, "lost": 0}
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("done", 2)
    lead.refresh_from_db()
    assert lead.hubspot_id == next(iter(fake_hubspot.contacts))
    assert len(upserts(fake_hubspot)) == 2 and len(fake_hubspot.contacts) == 1


def test_a_lost_queue_message_is_re_enqueued_by_the_sweeper(fake_hubspot, bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # the broker never got the message
        capture(bot)
    job = SyncJob.objects.get()
    assert sync_jobs_sweep() == {"stuck": 0, "lost": 0}
    with django_capture_on_commit_callbacks(execute=True):
        assert sync_jobs_sweep(now=timezone.now() + timedelta(seconds=121)) == {"stuck": 0, "lost": 1}
    job.refresh_from_db()
    assert job.status == "done" and len(fake_hubspot.contacts) == 1


def test_429_with_retry_after_is_retried_after_at_least_that_long(
    fake_hubspot, bot, monkeypatch, django_capture_on_commit_callbacks
):
    fake_hubspot.script(
        "POST", UPSERT, 429, {"message": "You have reached your ten_secondly_rolling limit."}, {"Retry-After": "7"}
    )
    with django_capture_on_commit_callbacks():
        capture(bot)
    job = SyncJob.objects.get()
    outcome = sync_job_process(job_id=job.pk)
    job.refresh_from_db()
    assert outcome.status == "pending" and 7 <= outcome.retry_in <= 8
    assert job.status == "pending" and "429" in job.last_error and "ten_secondly" in job.last_error
    assert timezone.now() + timedelta(seconds=6) < job.next_attempt_at <= timezone.now() + timedelta(seconds=8)
    # Not "lost" while it waits for its retry.
    assert sync_jobs_sweep(now=timezone.now() + timedelta(seconds=5)) == {"stuck": 0, "lost": 0}
    assert sync_job_process(job_id=job.pk).status == "done"
    job.refresh_from_db()
    assert (job.status, job.attempts, job.last_error) == ("done", 2, "")
    assert len(upserts(fake_hubspot)) == 2 and len(fake_hubspot.contacts) == 1


def test_the_task_retries_through_celery_with_the_backoff(
    fake_hubspot, bot, monkeypatch, django_capture_on_commit_callbacks
):
    fake_hubspot.script("POST", UPSERT, 503, {"message": "down"})
    fake_hubspot.script("POST", UPSERT, 429, {}, {"Retry-After": "3"})
    countdowns = []
    original = sync_job_process_task.retry

    def spy(*args, **kwargs):
        countdowns.append(kwargs["countdown"])
        return original(*args, **kwargs)

    monkeypatch.setattr(sync_job_process_task, "retry", spy)
    # As a worker does: a Retry schedules the next run (eager: runs it at once) instead of
    # propagating to the caller as the test settings make other errors do.
    monkeypatch.setitem(sync_job_process_task.app.conf, "task_eager_propagates", False)
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot)
    job = SyncJob.objects.get()
    assert (job.status, job.attempts) == ("done", 3)
    assert len(countdowns) == 2
    assert 2.5 <= countdowns[0] <= 5  # first step: base 5 s with equal jitter
    assert countdowns[1] >= 3  # never sooner than Retry-After
    assert len(fake_hubspot.contacts) == 1


def test_the_backoff_grows_and_is_capped(settings):
    settings.HUBSPOT_SYNC_BACKOFF_BASE_SECONDS = 5
    settings.HUBSPOT_SYNC_BACKOFF_MAX_SECONDS = 60
    delays = [sync_services.retry_delay(attempt=n, retry_after=None) for n in range(1, 8)]
    assert 2.5 <= delays[0] <= 5 and 5 <= delays[1] <= 10 and 10 <= delays[2] <= 20
    assert all(30 <= d <= 60 for d in delays[4:])
    assert sync_services.retry_delay(attempt=1, retry_after=120) >= 120


def test_giving_up_after_the_last_attempt(fake_hubspot, bot, settings, django_capture_on_commit_callbacks):
    settings.HUBSPOT_SYNC_MAX_ATTEMPTS = 2
    for _ in range(2):
        fake_hubspot.script("POST", UPSERT, 500, {"message": "internal"})
    with django_capture_on_commit_callbacks():
        capture(bot)
    job = SyncJob.objects.get()
    assert sync_job_process(job_id=job.pk).status == "pending"
    assert sync_job_process(job_id=job.pk).status == "failed"
    job.refresh_from_db()
    assert job.status == "failed" and "Gave up after 2 attempts" in job.last_error


def test_a_permanent_400_fails_visibly_in_admin_and_the_retry_action_resends(
    fake_hubspot, bot, staff_client, django_capture_on_commit_callbacks
):
    fake_hubspot.script("POST", UPSERT, 400, {"status": "error", "message": "Property values were not valid: phone"})
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot)
    job = SyncJob.objects.get()
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.last_error == "HTTP 400: Property values were not valid: phone"

    listing = staff_client.get(reverse("admin:crm_syncjob_changelist") + "?status__exact=failed")
    assert listing.status_code == 200
    assert b"Property values were not valid: phone" in listing.content
    page = staff_client.get(reverse("admin:crm_syncjob_change", args=[job.pk]))
    assert b"Property values were not valid: phone" in page.content

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("admin:crm_syncjob_changelist"), {"action": "retry", "_selected_action": [job.pk]}
        )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "done" and job.last_error == ""
    assert len(fake_hubspot.contacts) == 1


def test_a_deal_is_created_once_when_the_lead_is_qualified(fake_hubspot, bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        lead = capture(bot)
    assert not SyncJob.objects.filter(kind="deal").exists()
    with django_capture_on_commit_callbacks(execute=True):
        lead_status_change(lead=Lead.objects.get(pk=lead.pk), status="qualified")
    deal_job = SyncJob.objects.get(kind="deal")
    assert deal_job.status == "done"
    lead.refresh_from_db()
    [create] = fake_hubspot.calls("POST", "/crm/v3/objects/deals")
    assert create.body == {
        "properties": {
            "dealname": f"Priya Raman (ChatBase lead {lead.pk})",
            "pipeline": "default",
            "dealstage": "appointmentscheduled",
        },
        "associations": [
            {
                "to": {"id": lead.hubspot_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
            }
        ],
    }
    # Later changes never ask for another deal, and re-running the job finds the deal.
    with django_capture_on_commit_callbacks(execute=True):
        lead_status_change(lead=Lead.objects.get(pk=lead.pk), status="contacted")
    SyncJob.objects.filter(pk=deal_job.pk).update(status="pending")
    assert sync_job_process(job_id=deal_job.pk).status == "done"
    assert SyncJob.objects.filter(kind="deal").count() == 1
    assert len(fake_hubspot.deals) == 1
    assert len(fake_hubspot.calls("POST", "/crm/v3/objects/deals")) == 1


def test_a_note_with_the_summary_once_per_conversation(fake_hubspot, bot, django_capture_on_commit_callbacks):
    conversation = conversation_start(bot=bot, visitor_id="v-1", channel=Conversation.Channel.WIDGET)
    Conversation.objects.filter(pk=conversation.pk).update(summary="Asked about bulk saree orders for March.")
    with django_capture_on_commit_callbacks(execute=True):
        lead = capture(bot, conversation=conversation)
    with django_capture_on_commit_callbacks(execute=True):
        conversation_end(conversation=Conversation.objects.get(pk=conversation.pk), reason="closed")
    note_job = SyncJob.objects.get(kind="note")
    assert note_job.status == "done" and note_job.idempotency_key == f"note:{conversation.pk}:{lead.pk}"
    lead.refresh_from_db()
    [create] = fake_hubspot.calls("POST", "/crm/v3/objects/notes")
    assert create.body["properties"]["hs_note_body"] == (
        f"Asked about bulk saree orders for March.\n\n[ChatBase conversation {conversation.pk}]"
    )
    assert create.body["associations"] == [
        {"to": {"id": lead.hubspot_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}
    ]
    # The same conversation again (a duplicate event, a re-run job): still one note.
    with django_capture_on_commit_callbacks(execute=True):
        from crm.receivers import on_conversation_ended

        on_conversation_ended(Conversation, conversation=conversation, reason="closed")
    SyncJob.objects.filter(pk=note_job.pk).update(status="pending")
    assert sync_job_process(job_id=note_job.pk).status == "done"
    assert len(fake_hubspot.notes) == 1
    assert SyncJob.objects.filter(kind="note").count() == 1


def test_a_contact_deleted_in_hubspot_is_found_again_by_email(fake_hubspot, bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        lead = capture(bot)
    fake_hubspot.contacts.clear()
    with django_capture_on_commit_callbacks(execute=True):
        from leads.services import lead_update

        lead_update(lead=Lead.objects.get(pk=lead.pk), company="New Co")
    assert len(fake_hubspot.contacts) == 1
    lead.refresh_from_db()
    assert lead.hubspot_id == next(iter(fake_hubspot.contacts))


def test_nothing_is_queued_without_hubspot_or_without_an_email(
    settings, bot, fake_hubspot, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot, email="", phone="+919876543210")
    assert not SyncJob.objects.exists()
    settings.HUBSPOT_ACCESS_TOKEN = ""
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot, email="nobody@example.com")
    assert not SyncJob.objects.exists()
    # An OAuth connection of this owner turns it on.
    HubSpotConnection.objects.create(owner=bot.owner, auth_type="oauth", status="connected")
    with django_capture_on_commit_callbacks():
        capture(bot, email="somebody@example.com")
    assert SyncJob.objects.count() == 1


def test_a_lead_without_the_consent_its_bot_requires_is_not_synced(
    fake_hubspot, owner, django_capture_on_commit_callbacks
):
    bot = BotFactory(owner=owner, configuration={"require_consent": True})
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot)
    assert not SyncJob.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        capture(bot, consent=True)
    assert SyncJob.objects.get().status == "done"
    assert fake_hubspot.contact_by_email("priya@example.com") is not None


def test_an_unexpected_error_is_retried_and_not_left_in_progress(
    fake_hubspot, bot, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        capture(bot)
    job = SyncJob.objects.get()

    def broken(client, lead):
        raise KeyError("surprise")

    monkeypatch.setattr(sync_services, "_contact_upsert", broken)
    outcome = sync_job_process(job_id=job.pk)
    job.refresh_from_db()
    assert outcome.status == "pending" and outcome.retry_in > 0
    assert job.status == "pending" and "KeyError" in job.last_error
