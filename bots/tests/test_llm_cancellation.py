"""A visitor who leaves must not keep a model talking: the upstream request is closed.

The fake server sees the TCP connection close; these tests wait for that, with a
bound well below the time the scripted answer would still have taken.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bots.llm import ChatMessage, ChatRequest, TextDelta, stream_chat
from bots.llm.clients import aclose_clients
from chatbase.testing.fake_llm import Script, fake_llm_fixture, fake_llm_server_fixture  # noqa: F401

# 200 tokens at 20 per second: ten seconds of answer unless the client hangs up.
LONG_ANSWER = " ".join(f"word{i}" for i in range(200))


def request(**kwargs) -> ChatRequest:
    return ChatRequest(
        system_prompt="You are helpful.",
        messages=[ChatMessage(role="user", content="Tell me everything.")],
        **kwargs,
    )


@pytest.fixture
async def llm(fake_llm):
    yield fake_llm
    await aclose_clients()


async def consume(chat_request: ChatRequest, received: list[str], started: asyncio.Event) -> None:
    async for event in stream_chat(chat_request):
        if isinstance(event, TextDelta):
            received.append(event.text)
            if len(received) >= 3:
                started.set()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cancelling_the_consumer_closes_the_upstream_stream(llm, provider):
    getattr(llm, provider).enqueue(Script(text=LONG_ANSWER, tokens_per_second=20))
    received: list[str] = []
    started = asyncio.Event()

    task = asyncio.create_task(consume(request(preferred_provider=provider), received, started))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    (upstream,) = llm.requests_for(provider)
    assert await llm.until(lambda: upstream.client_disconnected, timeout=1.0)
    assert not upstream.completed.is_set()
    assert upstream.tokens_sent < 50
    # Nothing was asked of another provider: a cancellation is not a failure.
    assert len(llm.requests) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_leaving_the_stream_early_with_aclosing_closes_upstream(llm, provider):
    getattr(llm, provider).enqueue(Script(text=LONG_ANSWER, tokens_per_second=20))

    async with contextlib.aclosing(stream_chat(request(preferred_provider=provider))) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break

    (upstream,) = llm.requests_for(provider)
    assert await llm.until(lambda: upstream.client_disconnected, timeout=1.0)
    assert upstream.tokens_sent < 50


async def test_cancelling_while_waiting_for_the_first_token_closes_upstream(llm):
    llm.openai.enqueue(Script(failure="hang"))

    task = asyncio.create_task(consume(request(), [], asyncio.Event()))
    assert await llm.until(lambda: len(llm.requests_for("openai")) == 1, timeout=5)
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    (upstream,) = llm.requests_for("openai")
    assert await llm.until(lambda: upstream.client_disconnected, timeout=1.0)
    assert llm.requests_for("anthropic") == []
