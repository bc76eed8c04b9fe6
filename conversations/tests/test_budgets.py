"""Daily token budgets per bot and per visitor."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from bots.services.bots import bot_update
from bots.tests.factories import BotFactory
from chatbase.asgi import application
from chatbase.core.errors import RateLimited
from chatbase.core.services import api_token_create
from conversations.budgets import bot_tokens_today, budget_check, budget_record
from conversations.models import Conversation, Message
from conversations.tests.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def spend(bot, *, visitor="v1", tokens=100, when=None) -> Conversation:
    conversation = Conversation.objects.create(bot=bot, visitor_id=visitor)
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="answer",
        input_tokens=tokens - 10,
        output_tokens=10,
    )
    if when is not None:
        Message.objects.filter(pk=message.pk).update(created_at=when)
    return conversation


def test_a_spent_bot_budget_refuses_the_answer_but_keeps_the_question(shop_bot):
    bot_update(bot=shop_bot, configuration={"daily_token_budget": 100})
    spend(shop_bot, tokens=100)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=shop_bot.owner)[1]}")

    response = client.post(f"/api/v1/bots/{shop_bot.pk}/chat/", {"message": "Refunds?"}, format="json")

    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "rate_limited" and body["reason"] == "bot_daily_budget"
    assert "limit for today" in body["detail"]
    assert 1 <= int(response["Retry-After"]) <= 24 * 3600
    stored = Message.objects.filter(role=Message.Role.USER, text="Refunds?")
    assert stored.count() == 1
    # No assistant row was begun for the refused answer.
    assert not Message.objects.filter(conversation=stored.get().conversation, role=Message.Role.ASSISTANT).exists()


def test_under_budget_answers_and_yesterdays_spending_does_not_count(shop_bot):
    bot_update(bot=shop_bot, configuration={"daily_token_budget": 100})
    spend(shop_bot, tokens=99)
    spend(shop_bot, tokens=5000, when=timezone.now() - dt.timedelta(days=1, minutes=1))
    conversation = Conversation.objects.create(bot=shop_bot, visitor_id="v2")

    budget_check(conversation=conversation)  # 99 of 100: still allowed
    assert bot_tokens_today(bot_id=shop_bot.pk) == 99


def test_the_visitor_cap_stops_one_visitor_not_the_others(shop_bot, settings):
    settings.VISITOR_DAILY_TOKEN_CAP = 0
    bot_update(bot=shop_bot, configuration={"visitor_daily_token_cap": 300})
    spend(shop_bot, visitor="heavy", tokens=200)
    spend(shop_bot, visitor="heavy", tokens=100)
    spend(shop_bot, visitor="light", tokens=50)

    with pytest.raises(RateLimited) as refused:
        budget_check(conversation=Conversation.objects.create(bot=shop_bot, visitor_id="heavy"))
    assert refused.value.extra == {"reason": "visitor_daily_cap"}
    budget_check(conversation=Conversation.objects.create(bot=shop_bot, visitor_id="light"))


def test_the_setting_caps_visitors_when_the_bot_sets_nothing(shop_bot, settings):
    settings.VISITOR_DAILY_TOKEN_CAP = 100
    spend(shop_bot, visitor="v1", tokens=100)
    with pytest.raises(RateLimited):
        budget_check(conversation=Conversation.objects.create(bot=shop_bot, visitor_id="v1"))


def test_recorded_answers_count_and_a_flushed_cache_is_rebuilt_from_the_messages(shop_bot):
    conversation = spend(shop_bot, tokens=40)
    assert bot_tokens_today(bot_id=shop_bot.pk) == 40  # counter created from the database

    spend(shop_bot, tokens=60)  # stored, then counted, as the chat engine does
    budget_record(conversation=conversation, tokens=60)
    assert bot_tokens_today(bot_id=shop_bot.pk) == 100

    cache.clear()  # Redis flushed or a new process: the messages are the truth
    assert bot_tokens_today(bot_id=shop_bot.pk) == 100


async def test_a_spent_budget_is_a_rate_limited_frame_on_the_chat_socket(shop_bot):
    await sync_to_async(bot_update)(bot=shop_bot, configuration={"daily_token_budget": 10})
    await sync_to_async(spend)(shop_bot, tokens=10)
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/{shop_bot.public_key}/", headers=[(b"origin", ORIGIN.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(timeout=10))["type"] == "session.ready"
    await communicator.send_json_to({"type": "message.send", "text": "Refunds?", "client_id": "c1"})
    frames = []
    while not frames or frames[-1]["type"] not in ("error", "answer.done"):
        frames.append(await communicator.receive_json_from(timeout=10))
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "rate_limited"
    await communicator.disconnect()
    assert await Message.objects.filter(role=Message.Role.USER, text="Refunds?").acount() == 1


def test_the_admin_bot_list_shows_todays_tokens_against_the_budget_in_one_query(
    shop_bot, admin_client, django_assert_max_num_queries
):
    bot_update(bot=shop_bot, configuration={"daily_token_budget": 1000})
    spend(shop_bot, tokens=1200)
    spend(shop_bot, tokens=300, when=timezone.now() - dt.timedelta(days=2))
    for _ in range(3):
        spend(BotFactory(), tokens=10)

    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/bots/bot/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "1,200 / 1,000 (spent)" in page
    assert page.count(">10<") == 3


def test_a_new_visitor_is_known_to_have_spent_nothing(shop_bot, django_assert_num_queries, settings):
    # Their first question would otherwise sum the day's messages to find 0.
    from conversations.services import conversation_open

    settings.VISITOR_DAILY_TOKEN_CAP = 1000
    conversation = conversation_open(bot=shop_bot, visitor_id="v-new", channel="widget", new_visitor=True)
    conversation = Conversation.objects.select_related("bot").get(pk=conversation.pk)
    with django_assert_num_queries(0):
        budget_check(conversation=conversation)
    # A returning visitor (not new) is summed from the stored messages.
    spend(shop_bot, visitor="v-back", tokens=1000)
    returning = conversation_open(bot=shop_bot, visitor_id="v-back", channel="widget")
    returning = Conversation.objects.select_related("bot").get(pk=returning.pk)
    with pytest.raises(RateLimited):
        budget_check(conversation=returning)
