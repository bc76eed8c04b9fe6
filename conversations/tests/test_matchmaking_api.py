"""The sessions API for external apps, and the signed matchmaking webhook."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bots.tests.factories import BotFactory
from chatbase.testing.fake_llm import Script
from conversations.matchmaking.webhooks import signature_header
from conversations.models import Conversation
from conversations.services import conversations_lifecycle
from crm.models import WebhookEvent

# Answers are prepared on another thread (its own connection): it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec-test-0123456789"


@pytest.fixture
def bot(owner):
    return BotFactory(owner=owner, name="Buddy", welcome_message="Hey {name}, I'm {bot_name}!")


def create(client, **body):
    return client.post("/api/v1/sessions/", {"user_id": "u-1", **body}, format="json")


def created(client, **body) -> int:
    response = create(client, **body)
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_create_personalises_and_picks_the_template_from_the_profile(owner_client, bot):
    response = create(owner_client, profile={"name": "Ravi", "age": 31, "interests": ["first date tips"]})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["user_id"] == "u-1" and body["bot_id"] == bot.pk and body["status"] == "active"
    assert body["template"] == "dating_advice" and body["welcome"] == "Hey Ravi, I'm Buddy!"
    assert body["message_count"] == 0 and body["tokens_used"] == 0 and body["source"] == "api"
    session = Conversation.objects.get(pk=body["id"])
    assert session.channel == "matchmaking" and session.visitor_id == "user:u-1"


def test_create_with_an_explicit_template_and_bot(owner_client, owner, bot):
    other = BotFactory(owner=owner, name="Other")
    response = create(owner_client, template="support_agent", bot_id=other.pk)
    assert response.status_code == 201
    assert response.json()["template"] == "support_agent" and response.json()["bot_id"] == other.pk


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"template": "no-such-template"}, 400, "unknown_template"),
        ({"profile": ["not", "an", "object"]}, 400, "invalid"),
        ({"user_id": ""}, 400, "invalid"),
        ({"bot_id": 999999}, 404, "not_found"),
    ],
)
def test_create_rejects_bad_input(owner_client, bot, body, status, code):
    response = create(owner_client, **body)
    assert response.status_code == status and response.json()["code"] == code


def test_create_needs_a_bot_and_a_token(owner_client, api_client):
    response = create(owner_client)
    assert response.status_code == 400 and response.json()["code"] == "no_bot"
    assert create(api_client).status_code == 401


def test_another_owners_bot_and_sessions_are_not_found(owner_client, other_owner, bot):
    foreign_bot = BotFactory(owner=other_owner)
    assert create(owner_client, bot_id=foreign_bot.pk).status_code == 404
    other_client = APIClient()
    other_client.force_authenticate(other_owner)
    session_id = created(owner_client)
    for method, path in [
        ("get", f"/api/v1/sessions/{session_id}/"),
        ("post", f"/api/v1/sessions/{session_id}/messages/"),
        ("post", f"/api/v1/sessions/{session_id}/end/"),
    ]:
        response = getattr(other_client, method)(path, {"text": "hi"}, format="json")
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_messages_get_replies_and_the_session_counts_them(owner_client, bot, fake_llm):
    fake_llm.openai.enqueue(Script(text="Nice to meet you!", usage=(120, 6)))
    session_id = create(owner_client, profile={"name": "Ravi"}).json()["id"]
    response = owner_client.post(f"/api/v1/sessions/{session_id}/messages/", {"text": "hi there"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["message"]["text"] == "Nice to meet you!"
    assert response.json()["message"]["provider"] == "openai"
    detail = owner_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert detail["message_count"] == 2
    assert detail["input_tokens"] == 120 and detail["output_tokens"] == 6 and detail["tokens_used"] == 126


async def test_messages_stream_as_sse(owner, bot, fake_llm):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from chatbase.core.services import api_token_create

    fake_llm.openai.enqueue(Script(text="Streaming hello"))
    _, token = await sync_to_async(api_token_create)(user=owner, name="sse")
    auth = {"Authorization": f"Bearer {token}"}
    client = AsyncClient()
    created_response = await client.post(
        "/api/v1/sessions/", {"user_id": "u-1"}, content_type="application/json", headers=auth
    )
    assert created_response.status_code == 201, created_response.json()
    session_id = created_response.json()["id"]
    response = await client.post(
        f"/api/v1/sessions/{session_id}/messages/",
        {"text": "hi"},
        content_type="application/json",
        headers={**auth, "Accept": "text/event-stream"},
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    text = "".join([chunk.decode() async for chunk in response.streaming_content])
    assert "event: delta" in text and "event: done" in text and "Streaming hello" in text


def test_an_idle_session_pauses_and_the_next_message_resumes_it(owner_client, bot, fake_llm, settings):
    settings.CONVERSATION_PAUSE_AFTER_SECONDS = 300
    session_id = created(owner_client)
    Conversation.objects.filter(pk=session_id).update(last_activity_at=timezone.now() - timedelta(minutes=6))
    conversations_lifecycle()
    assert owner_client.get(f"/api/v1/sessions/{session_id}/").json()["status"] == "paused"
    owner_client.post(f"/api/v1/sessions/{session_id}/messages/", {"text": "back again"}, format="json")
    assert owner_client.get(f"/api/v1/sessions/{session_id}/").json()["status"] == "active"


def test_ending_a_session_refuses_further_messages(owner_client, bot):
    session_id = created(owner_client)
    ended = owner_client.post(f"/api/v1/sessions/{session_id}/end/").json()
    assert ended["status"] == "ended" and ended["end_reason"] == "ended_by_app" and ended["ended_at"]
    response = owner_client.post(f"/api/v1/sessions/{session_id}/messages/", {"text": "hello?"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "conversation_ended"


def test_messages_are_rate_limited_per_user(owner_client, bot, settings):
    settings.MATCH_RATE_PER_USER = "2/hour"  # not per minute: a fixed minute window could end between the hits
    session_id = created(owner_client)
    codes = [
        owner_client.post(f"/api/v1/sessions/{session_id}/messages/", {"text": f"m{i}"}, format="json").status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


def test_the_list_is_paginated_filtered_and_free_of_n_plus_one(owner_client, bot, django_assert_max_num_queries):
    for i in range(5):
        create(owner_client, user_id=f"user-{i % 2}")
    with django_assert_max_num_queries(4):  # token, count, page (bots and templates joined)
        response = owner_client.get("/api/v1/sessions/")
    assert response.json()["count"] == 5
    filtered = owner_client.get("/api/v1/sessions/?user_id=user-1").json()
    assert filtered["count"] == 2 and {s["user_id"] for s in filtered["results"]} == {"user-1"}


# --- the signed webhook ---------------------------------------------------------------


@pytest.fixture
def secret(settings):
    settings.MATCHMAKING_WEBHOOK_SECRET = SECRET
    return SECRET


def deliver(client, payload, *, secret=SECRET, timestamp=None, header=None):
    body = json.dumps(payload).encode()
    signature = header if header is not None else signature_header(body, secret, timestamp)
    return client.post(
        "/api/v1/webhooks/matchmaking/", body, content_type="application/json", HTTP_CHATBASE_SIGNATURE=signature
    )


def fallback(event_id="evt-1", **extra):
    return {
        "event_id": event_id,
        "type": "chatbot_fallback_triggered",
        "user_id": "app-user-7",
        "profile": {"name": "Meena", "age": 22, "interests": ["music"]},
        **extra,
    }


def test_a_signed_fallback_starts_a_session(api_client, secret, bot):
    response = deliver(api_client, fallback(bot=bot.public_key))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "processed" and body["socket"] is False and body["template"] == "casual_chat"
    session = Conversation.objects.get(pk=body["session_id"])
    assert session.bot == bot and session.visitor_id == "user:app-user-7"
    assert session.profile["name"] == "Meena" and session.metadata["source"] == "webhook"
    assert WebhookEvent.objects.get(source="matchmaking", event_id="evt-1").status == "processed"


def test_without_a_bot_named_the_companion_answers(api_client, secret):
    body = deliver(api_client, fallback()).json()
    session = Conversation.objects.select_related("bot").get(pk=body["session_id"])
    assert session.bot.name == "Matchmaking companion"


def test_a_bad_signature_is_refused_with_401(api_client, secret):
    response = deliver(api_client, fallback(), secret="not-the-secret")
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"
    assert not Conversation.objects.exists() and not WebhookEvent.objects.exists()


def test_a_tampered_body_is_refused(api_client, secret):
    header = signature_header(json.dumps(fallback()).encode(), SECRET)
    response = deliver(api_client, fallback(user_id="someone-else"), header=header)
    assert response.status_code == 401


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "garbage"])
def test_a_missing_or_malformed_signature_is_refused(api_client, secret, header):
    response = deliver(api_client, fallback(), header=header)
    assert response.status_code == 401 and response.json()["detail"]


def test_a_stale_timestamp_is_refused(api_client, secret):
    response = deliver(api_client, fallback(), timestamp=int(time.time()) - 301)
    assert response.status_code == 401 and response.json()["code"] == "stale_signature"
    assert deliver(api_client, fallback(), timestamp=int(time.time()) - 200).status_code == 200


def test_a_replay_is_answered_200_and_ignored(api_client, secret):
    first = deliver(api_client, fallback())
    again = deliver(api_client, fallback())
    assert first.status_code == again.status_code == 200
    assert again.json() == {"status": "replay"}
    assert Conversation.objects.count() == 1


def test_other_event_types_are_recorded_and_ignored(api_client, secret):
    response = deliver(api_client, {"event_id": "e2", "type": "user_matched", "user_id": "x"})
    assert response.json() == {"status": "ignored"}
    assert WebhookEvent.objects.get(event_id="e2").status == "ignored"
    assert not Conversation.objects.exists()


def test_an_invalid_fallback_is_400_and_recorded_as_failed(api_client, secret):
    response = deliver(api_client, fallback(user_id=""))
    assert response.status_code == 400
    assert WebhookEvent.objects.get(event_id="evt-1").status == "failed"
    response = deliver(api_client, {"type": "chatbot_fallback_triggered"})
    assert response.status_code == 400 and response.json()["detail"].startswith("event_id")


def test_unconfigured_webhooks_answer_409(api_client, settings):
    settings.MATCHMAKING_WEBHOOK_SECRET = ""
    response = deliver(api_client, fallback(), secret="")
    assert response.status_code == 409 and response.json()["code"] == "not_configured"
