"""Once, end to end: a real websocket client against a real Daphne process."""

import asyncio
import json

import pytest
import websockets

from chatbase.testing.fake_llm import Script
from conversations.tests.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_visitor_chats_with_a_running_daphne(shop_bot, live_daphne, fake_llm):
    fake_llm.openai.enqueue(Script(text="Refunds take 14 days [1].", tokens_per_second=100))
    server = live_daphne(
        env={
            "CHATBASE_TEST_PROVIDERS_FROM_ENV": "1",
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": fake_llm.openai_base_url,
            "LLM_PROVIDERS": "openai,extractive",
        }
    )

    async def visit():
        url = f"{server.ws_url}/ws/chat/{shop_bot.public_key}/"
        async with websockets.connect(url, origin=ORIGIN) as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "session.ready" and ready["welcome"] == "Hello!"
            await ws.send(json.dumps({"type": "message.send", "text": "How long do refunds take?", "client_id": "a"}))
            frames = []
            # Generous: the server's first answer may wait for the embedding model to load,
            # tens of seconds on a busy shared machine (no timing is asserted here).
            while not frames or frames[-1]["type"] not in ("answer.done", "error"):
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 90)))
            return frames

    frames = asyncio.run(visit())
    assert frames[0]["type"] == "message.ack"
    assert [f["type"] for f in frames[1:-1]] == ["answer.delta"] * (len(frames) - 2)
    done = frames[-1]
    assert done["type"] == "answer.done" and done["provider"] == "openai"
    assert done["text"] == "Refunds take 14 days [1]."
    assert done["sources"][0]["document_title"] == "Returns policy"

    async def refused():
        url = f"{server.ws_url}/ws/chat/{shop_bot.public_key}/"
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(url, origin="https://evil.example.com"):
                pass
        return exc.value.response.status_code

    assert asyncio.run(refused()) == 403
