"""The model provider accepts the request and then says nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatbase.testing.fake_llm import Script
from conversations.models import Message
from tests.reliability.conftest import ask, connect

pytestmark = pytest.mark.django_db(transaction=True)

FIRST_TOKEN_TIMEOUT = 2.0


def serve_with(live_daphne, fake_llm, providers: str):
    return live_daphne(
        env={
            "CHATBASE_TEST_PROVIDERS_FROM_ENV": "1",
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": fake_llm.openai_base_url,
            "LLM_PROVIDERS": providers,
            "LLM_FIRST_TOKEN_TIMEOUT": str(FIRST_TOKEN_TIMEOUT),
        }
    )


def test_a_hanging_provider_is_abandoned_at_the_first_token_timeout(shop_bot, live_daphne, fake_llm):
    fake_llm.openai.enqueue(Script(text="Warm."))
    fake_llm.openai.enqueue(Script(failure="hang", hang_seconds=60))
    server = serve_with(live_daphne, fake_llm, "openai")

    async def visit():
        ws, _ = await connect(server, shop_bot)
        # The first question also loads the embedding model: time the second one.
        assert (await ask(ws, "Hello?", "m0", timeout=120))[-1]["type"] == "answer.done"
        started = time.monotonic()
        frames = await ask(ws, "How long do refunds take?", "m1", timeout=60)
        elapsed = time.monotonic() - started
        await ws.close()
        return frames, elapsed

    frames, elapsed = asyncio.run(visit())

    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unavailable", frames[-1]
    # Abandoned at the configured timeout, not at the SDK's 600 s default (bounded
    # generously above: the machine is shared).
    assert FIRST_TOKEN_TIMEOUT <= elapsed < FIRST_TOKEN_TIMEOUT + 15
    assert Message.objects.filter(role="user", client_id="m1").exists()
    assert len(fake_llm.requests_for("openai")) == 2  # the hang was not retried on the same provider


def test_a_hanging_provider_falls_back_to_the_next_one_unnoticed(shop_bot, live_daphne, fake_llm):
    fake_llm.openai.enqueue(Script(failure="hang", hang_seconds=60))
    server = serve_with(live_daphne, fake_llm, "openai,extractive")

    async def visit():
        ws, _ = await connect(server, shop_bot)
        frames = await ask(ws, "How long do refunds take?", "m1", timeout=120)
        await ws.close()
        return frames

    frames = asyncio.run(visit())
    assert frames[-1]["type"] == "answer.done" and frames[-1]["provider"] == "extractive"
    assert "14 days" in frames[-1]["text"]
    answer = Message.objects.get(role="assistant")
    assert answer.providers == ["extractive"] and not answer.incomplete
