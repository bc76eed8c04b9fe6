import pytest

from crm.models import WebhookEvent
from crm.services import webhook_event_finish, webhook_event_record

pytestmark = pytest.mark.django_db


def test_an_event_is_recorded_once_and_a_replay_is_reported():
    first, created = webhook_event_record(
        source="hubspot", event_id="42", event_type="contact.creation", payload={"a": 1}
    )
    again, created_again = webhook_event_record(source="hubspot", event_id="42", payload={"a": 2})

    assert created is True and created_again is False
    assert again.pk == first.pk
    assert WebhookEvent.objects.get().payload == {"a": 1}


def test_the_same_id_from_another_source_is_another_event():
    webhook_event_record(source="hubspot", event_id="7")
    _, created = webhook_event_record(source="gmail", event_id="7")
    assert created is True
    assert WebhookEvent.objects.count() == 2


def test_a_replay_inside_an_outer_transaction_leaves_it_usable():
    webhook_event_record(source="calendar", event_id="x")
    _, created = webhook_event_record(source="calendar", event_id="x")
    # The failed insert ran in a savepoint: the surrounding test transaction still works.
    assert created is False
    assert WebhookEvent.objects.filter(source="calendar").count() == 1


def test_finishing_an_event_records_outcome_and_attempts():
    event, _ = webhook_event_record(source="matchmaking", event_id="e1")
    webhook_event_finish(event=event, status=WebhookEvent.Status.FAILED, error="boom")
    event.refresh_from_db()
    assert (event.status, event.error, event.attempts) == ("failed", "boom", 1)
    assert event.processed_at is not None


def test_an_empty_event_id_is_refused():
    with pytest.raises(ValueError):
        webhook_event_record(source="hubspot", event_id="")
