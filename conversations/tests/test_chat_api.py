"""REST and SSE chat, and the transcripts API."""

from __future__ import annotations

import json

import pytest
from django.test import AsyncClient

from chatbase.core.services import api_token_create
from chatbase.testing.fake_llm import Script
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(shop_bot):
    return api_token_create(user=shop_bot.owner)[1]


@pytest.fixture
def client_for(token):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_rest_chat_returns_the_whole_answer_and_continues_the_conversation(shop_bot, client_for):
    url = f"/api/v1/bots/{shop_bot.pk}/chat/"
    first = client_for.post(url, {"message": "How long do refunds take?"}, format="json")
    assert first.status_code == 200, first.json()
    body = first.json()
    assert body["message"]["role"] == "assistant" and "14 days" in body["message"]["text"]
    assert body["message"]["sources"][0]["document_title"] == "Returns policy"
    assert body["message"]["provider"] == "extractive"
    second = client_for.post(
        url, {"message": "And shipping?", "conversation_id": body["conversation_id"]}, format="json"
    )
    assert second.json()["conversation_id"] == body["conversation_id"]
    conversation = Conversation.objects.get(pk=body["conversation_id"])
    assert conversation.channel == "api" and conversation.message_count == 4


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({}, 400, "invalid"),
        ({"message": "   "}, 400, "invalid"),
        ({"message": "x" * 4001}, 400, "too_long"),
        ({"message": "hi", "conversation_id": 999999}, 404, "not_found"),
    ],
)
def test_rest_chat_rejects_bad_input(shop_bot, client_for, payload, status, code):
    response = client_for.post(f"/api/v1/bots/{shop_bot.pk}/chat/", payload, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code
    assert not Message.objects.exists()


def test_another_owners_bot_and_conversation_are_404(shop_bot, client_for, other_owner):
    from bots.tests.factories import BotFactory

    foreign_bot = BotFactory(owner=other_owner)
    assert client_for.post(f"/api/v1/bots/{foreign_bot.pk}/chat/", {"message": "hi"}, format="json").status_code == 404
    foreign = Conversation.objects.create(bot=foreign_bot, visitor_id="v", channel="widget")
    assert client_for.get(f"/api/v1/conversations/{foreign.pk}/").status_code == 404
    response = client_for.post(
        f"/api/v1/bots/{shop_bot.pk}/chat/", {"message": "hi", "conversation_id": foreign.pk}, format="json"
    )
    assert response.status_code == 404


async def test_sse_streams_deltas_then_done(shop_bot, token, llm):
    llm.openai.enqueue(Script(text="Refunds take 14 days [1].", tokens_per_second=200))
    client = AsyncClient()
    response = await client.post(
        f"/api/v1/bots/{shop_bot.pk}/chat/",
        {"message": "How long do refunds take?"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = "".join([chunk.decode() async for chunk in response.streaming_content])
    events = parse_sse(body)
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"} and len(names) > 3
    done = events[-1][1]
    assert "".join(data["delta"] for name, data in events[:-1]) == done["message"]["text"]
    assert set(done) == {"conversation_id", "message"}
    assert set(done["message"]) >= {"id", "role", "text", "sources", "provider"}
    assert done["message"]["provider"] == "openai"


async def test_sse_reports_an_error_event_when_no_model_answers(shop_bot, token, llm, settings):
    settings.LLM_PROVIDERS = ["openai"]
    llm.openai.enqueue(Script(failure="server_error"))
    response = await AsyncClient().post(
        f"/api/v1/bots/{shop_bot.pk}/chat/",
        {"message": "Refunds?"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    events = parse_sse("".join([chunk.decode() async for chunk in response.streaming_content]))
    assert events == [("error", {"detail": events[0][1]["detail"], "code": "unavailable"})]


def test_transcripts_list_and_detail(shop_bot, client_for, django_assert_max_num_queries):
    for _ in range(3):
        client_for.post(f"/api/v1/bots/{shop_bot.pk}/chat/", {"message": "refunds?"}, format="json")
        Conversation.objects.update(status="ended")
    with django_assert_max_num_queries(4):
        listing = client_for.get(f"/api/v1/bots/{shop_bot.pk}/conversations/").json()
    assert listing["count"] == 3
    detail = client_for.get(f"/api/v1/conversations/{listing['results'][0]['id']}/").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    answer = detail["messages"][1]
    assert set(answer) >= {"input_tokens", "output_tokens", "cost_usd", "latency_ms", "first_token_ms", "provider"}
    assert answer["latency_ms"] is not None


def test_sse_client_gets_bad_input_as_an_error_event(shop_bot, token):
    from django.test import Client

    response = Client().post(
        f"/api/v1/bots/{shop_bot.pk}/chat/",
        {"message": ""},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    assert response.status_code == 400
    assert parse_sse(response.content.decode())[0][0] == "error"
