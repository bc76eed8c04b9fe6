"""Redis goes away in the middle of a chat: answers go on from the database."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conversations.models import Message
from tests.reliability.conftest import ask, connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_chat_keeps_answering_while_redis_is_down_and_after_it_returns(shop_bot, live_daphne, private_redis):
    server = live_daphne(env={"REDIS_URL": private_redis.url, "CHATBASE_TEST_REDIS_PREFIX": "reliability-redis"})

    async def before():
        ws, ready = await connect(server, shop_bot)
        frames = await ask(ws, "How long do refunds take?", "m1")
        return ws, ready, frames

    loop = asyncio.new_event_loop()
    try:
        ws, ready, frames = loop.run_until_complete(before())
        assert frames[-1]["type"] == "answer.done" and "14 days" in frames[-1]["text"]

        private_redis.stop()  # the cache, rate limits, channel layer and broker are gone

        # The open socket survives and still answers (rate limits fail open, logged).
        frames = loop.run_until_complete(ask(ws, "How many working days until my order ships?", "m2"))
        assert frames[-1]["type"] == "answer.done", frames[-1]
        assert "two working days" in frames[-1]["text"]
        # A new visitor socket works too, and the returning visitor gets their history.
        ws2, ready2 = loop.run_until_complete(connect(server, shop_bot, visitor=ready["visitor_token"]))
        assert [m["text"] for m in ready2["history"] if m["role"] == "user"] == [
            "How long do refunds take?",
            "How many working days until my order ships?",
        ]
        frames = loop.run_until_complete(ask(ws2, "Refunds again?", "m3"))
        assert frames[-1]["type"] == "answer.done", frames[-1]
        # Readiness says what is wrong, so the load balancer and the operator know.
        readiness = httpx.get(f"{server.url}/ready", timeout=10)
        assert readiness.status_code == 503 and readiness.json()["checks"]["redis"] != "ok"

        private_redis.start()  # back, empty (it keeps nothing on disk)
        frames = loop.run_until_complete(ask(ws2, "And express delivery?", "m4"))
        assert frames[-1]["type"] == "answer.done", frames[-1]
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        loop.run_until_complete(ws.close())
        loop.run_until_complete(ws2.close())
    finally:
        loop.close()

    stored = list(Message.objects.filter(role=Message.Role.USER).order_by("id").values_list("text", flat=True))
    assert stored == [
        "How long do refunds take?",
        "How many working days until my order ships?",
        "Refunds again?",
        "And express delivery?",
    ]
    assert Message.objects.filter(role=Message.Role.ASSISTANT, incomplete=False).count() == 4
