import base64
import json
from datetime import timedelta

import pytest
from allauth.socialaccount.models import SocialAccount, SocialToken
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone

from bots.models import Document
from bots.selectors import chunk_search
from bots.tests.factories import BotFactory
from crm.models import GoogleSync, MemoryRule, RuleExecution, WebhookEvent

pytestmark = pytest.mark.django_db
GMAIL = "/api/v1/webhooks/gmail/"
CALENDAR = "/api/v1/webhooks/calendar/"
MAILBOX = "owner@example.com"


def envelope(message_id="m-1", history_id="210", address=MAILBOX) -> str:
    data = base64.b64encode(json.dumps({"emailAddress": address, "historyId": history_id}).encode()).decode()
    return json.dumps(
        {"message": {"data": data, "messageId": message_id}, "subscription": "projects/p/subscriptions/s"}
    )


def push(client, token: str | None, body: str):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(GMAIL, data=body, content_type="application/json", headers=headers)


@pytest.fixture
def sync(owner):
    account = SocialAccount.objects.create(user=owner, provider="google", uid="google-uid-1")
    SocialToken.objects.create(
        account=account, token="expired-access", token_secret="refresh-1", expires_at=timezone.now() - timedelta(1)
    )
    bot = BotFactory(owner=owner)
    return GoogleSync.objects.create(
        owner=owner,
        bot=bot,
        gmail_address=MAILBOX,
        gmail_history_id="200",
        calendar_channel_id="chan-1",
        calendar_channel_token="channel-secret-xyz",
        calendar_resource_id="res-1",
    )


# --- Gmail: verification ------------------------------------------------------------


def test_a_valid_push_is_recorded_and_queued(client, fake_google, sync, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = push(client, fake_google.pubsub_token(), envelope())
    assert response.status_code == 200, response.content
    assert response.json() == {"received": 1, "replays": 0}
    event = WebhookEvent.objects.get()
    assert (event.source, event.event_id, event.payload) == (
        "gmail",
        "m-1",
        {"emailAddress": MAILBOX, "historyId": "210"},
    )
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://someone-else.example/"}, "Audience"),
        ({"email": "intruder@evil.iam.gserviceaccount.com"}, "service account"),
        ({"email_verified": False}, "not verified"),
        ({"exp": 1_000_000}, "expired"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": None}, "aud"),
    ],
)
def test_tokens_with_wrong_claims_are_refused(client, fake_google, claims, reason):
    response = push(client, fake_google.pubsub_token(**claims), envelope())
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert reason.lower() in response.json()["detail"].lower()
    assert not WebhookEvent.objects.exists()


def test_a_token_signed_by_another_key_is_refused(client, fake_google):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = push(client, fake_google.pubsub_token(key=other), envelope())
    assert response.status_code == 401 and "signature" in response.json()["detail"].lower()


def test_an_unknown_key_id_fetches_the_keys_again_once(client, fake_google):
    assert push(client, fake_google.pubsub_token(), envelope("a")).status_code == 200
    assert push(client, fake_google.pubsub_token(), envelope("b")).status_code == 200
    assert fake_google.jwks_fetches == 1  # cached
    response = push(client, fake_google.pubsub_token(kid="rotated"), envelope("c"))
    assert response.status_code == 401 and "unknown key" in response.json()["detail"]
    assert fake_google.jwks_fetches == 2


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
def test_missing_or_garbage_tokens_are_refused(client, fake_google, token):
    assert push(client, token, envelope()).status_code == 401


def test_without_configuration_every_push_is_refused(client, fake_google, settings):
    settings.GOOGLE_PUBSUB_AUDIENCE = ""
    assert push(client, fake_google.pubsub_token(), envelope()).status_code == 401


def test_a_replayed_push_is_answered_200_and_processed_once(client, fake_google, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as first:
        push(client, fake_google.pubsub_token(), envelope("same"))
    with django_capture_on_commit_callbacks() as second:
        response = push(client, fake_google.pubsub_token(), envelope("same"))
    assert response.json() == {"received": 0, "replays": 1}
    assert (len(first), len(second)) == (1, 0)


@pytest.mark.parametrize("body", ['{"message": {}}', '{"message": {"messageId": "1", "data": "%%%"}}', "[]"])
def test_a_verified_but_malformed_push_is_400(client, fake_google, body):
    assert push(client, fake_google.pubsub_token(), body).status_code == 400


# --- Gmail: ingestion ---------------------------------------------------------------


def test_new_mail_is_ingested_into_the_chosen_bot_and_searchable(
    client, fake_google, sync, media_root, django_capture_on_commit_callbacks
):
    MemoryRule.objects.create(
        owner=sync.owner, text="when gmail.message.received then log", event="gmail.message.received", action="log"
    )
    fake_google.add_message("msg-77", subject="Quarterly budget review", text="The zephyr turbine budget is 4.2 crore.")
    with django_capture_on_commit_callbacks(execute=True):
        assert push(client, fake_google.pubsub_token(), envelope(history_id=fake_google.history_id)).status_code == 200

    document = Document.objects.get(bot=sync.bot)
    assert document.title == "E-mail: Quarterly budget review"
    assert document.metadata["gmail_message_id"] == "msg-77"
    assert document.status == Document.Status.READY
    results = chunk_search(bot=sync.bot, query="zephyr turbine budget", k=3)
    assert results and results[0].document_id == document.pk
    assert "4.2 crore" in results[0].text

    # The expired access token was refreshed with the refresh token, then used.
    gmail_calls = [r for r in fake_google.requests if r.path.startswith("/gmail/")]
    assert gmail_calls and all(r.headers["authorization"] == "Bearer refreshed-refresh-1" for r in gmail_calls)
    sync.refresh_from_db()
    assert sync.gmail_history_id == fake_google.history_id
    assert WebhookEvent.objects.get().status == "processed"
    assert RuleExecution.objects.get().outcome == "ok"


def test_the_same_message_is_not_ingested_twice(
    client, fake_google, sync, media_root, django_capture_on_commit_callbacks
):
    fake_google.add_message("msg-1", subject="Hello", text="First mail.")
    with django_capture_on_commit_callbacks(execute=True):
        push(client, fake_google.pubsub_token(), envelope("n1"))
    # Gmail reports the same history again (an older start id after a restore).
    GoogleSync.objects.filter(pk=sync.pk).update(gmail_history_id="200")
    with django_capture_on_commit_callbacks(execute=True):
        push(client, fake_google.pubsub_token(), envelope("n2"))
    assert Document.objects.filter(bot=sync.bot).count() == 1


def test_the_first_notification_only_records_where_to_start(
    client, fake_google, sync, django_capture_on_commit_callbacks
):
    GoogleSync.objects.filter(pk=sync.pk).update(gmail_history_id="")
    with django_capture_on_commit_callbacks(execute=True):
        push(client, fake_google.pubsub_token(), envelope(history_id="555"))
    sync.refresh_from_db()
    assert sync.gmail_history_id == "555"
    assert not Document.objects.exists()


def test_a_mailbox_without_sync_is_ignored(client, fake_google, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        push(client, fake_google.pubsub_token(), envelope(address="stranger@example.com"))
    assert WebhookEvent.objects.get().status == "ignored"


def test_revoked_google_access_fails_the_event_visibly(client, fake_google, sync, django_capture_on_commit_callbacks):
    fake_google.fail_next = {"/token": [400]}  # the token refresh is refused
    with django_capture_on_commit_callbacks(execute=True):
        push(client, fake_google.pubsub_token(), envelope())
    event = WebhookEvent.objects.get()
    assert event.status == "failed" and "refresh" in event.error
    sync.refresh_from_db()
    assert "refresh" in sync.last_error


# --- Calendar -----------------------------------------------------------------------


def notify(client, number="1", token="channel-secret-xyz", channel="chan-1", resource="res-1", state="exists"):
    headers = {
        "X-Goog-Channel-ID": channel,
        "X-Goog-Channel-Token": token,
        "X-Goog-Message-Number": number,
        "X-Goog-Resource-ID": resource,
        "X-Goog-Resource-State": state,
    }
    return client.post(CALENDAR, headers=headers)


@pytest.mark.parametrize(
    "change",
    [{"token": "wrong"}, {"token": ""}, {"channel": "chan-unknown"}, {"resource": "res-other"}],
)
def test_calendar_notifications_with_a_wrong_token_or_channel_are_refused(client, sync, change):
    response = notify(client, **change)
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
    assert not WebhookEvent.objects.exists()


def test_calendar_replays_are_answered_200_once(client, sync, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as first:
        assert notify(client, number="5").json() == {"received": 1, "replays": 0}
    with django_capture_on_commit_callbacks() as second:
        assert notify(client, number="5").json() == {"received": 0, "replays": 1}
    assert (len(first), len(second)) == (1, 0)
    assert WebhookEvent.objects.get().event_id == "chan-1:5"


def test_calendar_events_are_ingested_replaced_and_removed(
    client, fake_google, sync, media_root, django_capture_on_commit_callbacks
):
    MemoryRule.objects.create(
        owner=sync.owner,
        text="when calendar.event.created then create_task type=prepare",
        event="calendar.event.created",
        action="create_task",
        params={"type": "prepare"},
    )
    item = {
        "id": "ev-1",
        "status": "confirmed",
        "summary": "Site visit at Velachery showroom",
        "description": "Bring the marigold brochure samples.",
        "location": "Velachery, Chennai",
        "start": {"dateTime": "2025-06-03T10:00:00+05:30"},
        "end": {"dateTime": "2025-06-03T11:00:00+05:30"},
        "updated": "2025-06-01T10:00:00Z",
    }
    fake_google.calendar_items = [item]
    with django_capture_on_commit_callbacks(execute=True):
        assert notify(client, number="2").status_code == 200
    document = Document.objects.get(bot=sync.bot)
    assert document.title == "Calendar: Site visit at Velachery showroom"
    results = chunk_search(bot=sync.bot, query="marigold brochure samples", k=3)
    assert results and results[0].document_id == document.pk
    sync.refresh_from_db()
    assert sync.calendar_sync_token.startswith("sync-")
    from crm.models import Task

    assert Task.objects.get().type == "prepare"

    # Changed: the document is replaced, and it is not a new event for the rules.
    fake_google.calendar_items = [
        {**item, "description": "Bring the saffron samples.", "updated": "2025-06-02T10:00:00Z"}
    ]
    with django_capture_on_commit_callbacks(execute=True):
        notify(client, number="3")
    assert Document.objects.filter(bot=sync.bot).count() == 1
    assert "saffron" in chunk_search(bot=sync.bot, query="saffron samples", k=1)[0].text
    assert Task.objects.count() == 1

    # Cancelled: gone from the knowledge base. Google forgot our sync token first (410).
    fake_google.calendar_items = [{**item, "status": "cancelled", "updated": "2025-06-02T11:00:00Z"}]
    fake_google.calendar_sync_token_gone = True
    with django_capture_on_commit_callbacks(execute=True):
        notify(client, number="4")
    assert not Document.objects.filter(bot=sync.bot).exists()
    calls = [r.query for r in fake_google.requests if r.path.endswith("/events")]
    assert "syncToken" in calls[-2] and "syncToken" not in calls[-1]


def test_the_sync_message_of_a_new_channel_reads_nothing(client, fake_google, sync, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        notify(client, number="1", state="sync")
    assert WebhookEvent.objects.get().status == "ignored"
    assert not [r for r in fake_google.requests if r.path.endswith("/events")]


def test_watching_sets_up_gmail_and_a_fresh_calendar_channel(owner, fake_google, sync, settings, staff_client):
    settings.GOOGLE_PUBSUB_TOPIC = "projects/p/topics/gmail"
    settings.GOOGLE_CALENDAR_WEBHOOK_URL = "https://chatbase.example/api/v1/webhooks/calendar/"
    GoogleSync.objects.filter(pk=sync.pk).update(gmail_address="", gmail_history_id="")
    from django.urls import reverse

    response = staff_client.post(
        reverse("admin:crm_googlesync_changelist"), {"action": "watch", "_selected_action": [sync.pk]}
    )
    assert response.status_code == 302
    sync.refresh_from_db()
    assert (sync.gmail_address, sync.gmail_history_id) == (MAILBOX, fake_google.history_id)
    assert sync.calendar_channel_id != "chan-1" and sync.calendar_resource_id == "res-watched"
    [watch] = [r for r in fake_google.requests if r.path.endswith("/events/watch")]
    assert watch.body == {
        "id": sync.calendar_channel_id,
        "type": "web_hook",
        "address": "https://chatbase.example/api/v1/webhooks/calendar/",
        "token": sync.calendar_channel_token,
    }
    gmail_watch = next(r for r in fake_google.requests if r.path == "/gmail/v1/users/me/watch")
    assert gmail_watch.body == {"topicName": "projects/p/topics/gmail", "labelIds": ["INBOX"]}
    # The old channel's token no longer opens the door; the new one does.
    assert notify(client=staff_client, number="1").status_code == 401
    ok = notify(
        staff_client,
        number="1",
        channel=sync.calendar_channel_id,
        token=sync.calendar_channel_token,
        resource="res-watched",
    )
    assert ok.status_code == 200


def test_renewal_records_failures_on_the_sync(owner, fake_google, sync, settings):
    from crm.services.google import google_syncs_renew

    settings.GOOGLE_PUBSUB_TOPIC = ""
    assert google_syncs_renew() == {"renewed": 0, "failed": 1}
    sync.refresh_from_db()
    assert "GOOGLE_PUBSUB_TOPIC" in sync.last_error
