"""Token usage as the providers report it, and its cost from LLM_PRICES."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from bots.llm import ChatMessage, ChatRequest, ChatResult, Usage, stream_chat
from bots.llm.clients import aclose_clients
from bots.llm.pricing import cost_usd, model_price
from chatbase.testing.fake_llm import Script, fake_llm_fixture, fake_llm_server_fixture  # noqa: F401


def request(**kwargs) -> ChatRequest:
    return ChatRequest(
        system_prompt="You are helpful.",
        messages=[ChatMessage(role="user", content="Hello")],
        **kwargs,
    )


async def result_of(chat_request: ChatRequest) -> ChatResult:
    events = [event async for event in stream_chat(chat_request)]
    return events[-1]


@pytest.fixture
async def llm(fake_llm):
    yield fake_llm
    await aclose_clients()


async def test_openai_usage_from_the_final_chunk_is_priced_by_its_dated_model(llm):
    llm.openai.enqueue(Script(text="Hi there.", usage=(1200, 300), model="gpt-4o-mini-2024-07-18"))

    result = await result_of(request())

    # 1200 * 0.15 / 1M + 300 * 0.60 / 1M
    assert result.usage == [Usage("openai", "gpt-4o-mini-2024-07-18", 1200, 300, Decimal("0.00036"))]
    assert result.cost_usd == Decimal("0.00036")
    assert (result.input_tokens, result.output_tokens) == (1200, 300)


async def test_anthropic_usage_from_message_start_and_message_delta(llm):
    llm.anthropic.enqueue(Script(text="Hi there.", usage=(2000, 500), model="claude-haiku-4-5-20251001"))

    result = await result_of(request(preferred_provider="anthropic"))

    # 2000 * 1.00 / 1M + 500 * 5.00 / 1M
    assert result.usage == [Usage("anthropic", "claude-haiku-4-5-20251001", 2000, 500, Decimal("0.0045"))]


async def test_without_scripted_usage_the_streamed_tokens_are_counted(llm):
    llm.openai.enqueue(Script(text="one two three four"))

    result = await result_of(request())

    (usage,) = result.usage
    assert usage.output_tokens == 4
    assert usage.input_tokens > 0
    assert usage.cost_usd > 0


async def test_every_successful_call_is_counted_once(llm):
    llm.openai.enqueue(Script(text="Partial answer that", failure="cut", fail_after_tokens=2))
    llm.anthropic.enqueue(Script(text=" continues here.", usage=(100, 10)))

    result = await result_of(request())

    # The cut stream never reported usage; the continuation did.
    assert [(u.provider, u.input_tokens, u.output_tokens) for u in result.usage] == [("anthropic", 100, 10)]


async def test_an_unpriced_model_costs_nothing_and_warns_once(llm, settings, caplog):
    settings.OPENAI_MODEL = "llama3.2:3b-unpriced"
    llm.openai.enqueue(Script(text="Local model.", usage=(10, 5)), Script(text="Again.", usage=(10, 5)))

    with caplog.at_level(logging.WARNING, logger="bots.llm.pricing"):
        first = await result_of(request())
        second = await result_of(request())

    assert first.usage[0].cost_usd == Decimal(0)
    assert second.usage[0].cost_usd == Decimal(0)
    warnings = [r for r in caplog.records if "llama3.2:3b-unpriced" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_extractive_answerer_is_free(settings):
    settings.LLM_PROVIDERS = ["extractive"]
    result = await result_of(request())
    assert result.usage == [Usage("extractive", "extractive", 0, 0, Decimal(0))]


def test_prices_match_the_longest_priced_name(settings):
    assert model_price("gpt-4o-mini-2024-07-18") == (Decimal("0.15"), Decimal("0.60"))
    assert model_price("gpt-4o-2024-08-06") == (Decimal("2.50"), Decimal("10.00"))
    assert model_price("gpt-4o-minimal") is None


def test_prices_can_be_overridden_as_pairs_or_objects(settings):
    settings.LLM_PRICES = {"house-model": {"input": 0.1, "output": "0.3"}, "other": [1, 2]}
    assert cost_usd("house-model", 1_000_000, 1_000_000) == Decimal("0.4")
    assert cost_usd("other", 500_000, 250_000) == Decimal("1")


def test_a_malformed_price_is_a_configuration_error(settings):
    settings.LLM_PRICES = {"broken": ["cheap", "1"]}
    with pytest.raises(ImproperlyConfigured, match="broken"):
        cost_usd("broken", 1, 1)
