"""stream_chat's provider order, fallbacks, retries, timeouts and continuations.

The real openai and anthropic SDKs talk to chatbase.testing.fake_llm over a socket.
"""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from bots.llm import ChatMessage, ChatRequest, ChatResult, Passage, ProviderFailed, TextDelta, stream_chat
from bots.llm.clients import aclose_clients, anthropic_client, openai_client
from bots.llm.providers.extractive import CONTINUATION_INTRO, INTRO, NOT_FOUND
from bots.llm.router import join_continuation
from chatbase.core.errors import Unavailable
from chatbase.testing.fake_llm import Script, fake_llm_fixture, fake_llm_server_fixture  # noqa: F401

PASSAGES = [
    Passage(
        chunk_id=1,
        document_id=10,
        document_title="Returns policy",
        url="https://shop.example/returns",
        text="Refunds are issued within 14 days of receiving the returned item. Items must be unused.",
        score=0.9,
    ),
]


def request(text: str = "How long do refunds take?", **kwargs) -> ChatRequest:
    kwargs.setdefault("passages", PASSAGES)
    return ChatRequest(
        system_prompt="You are the shop's assistant.",
        messages=[ChatMessage(role="user", content=text)],
        **kwargs,
    )


async def collect(chat_request: ChatRequest) -> tuple[list, ChatResult]:
    events = [event async for event in stream_chat(chat_request)]
    assert isinstance(events[-1], ChatResult)
    assert not any(isinstance(event, ChatResult) for event in events[:-1])
    return events[:-1], events[-1]


def deltas(events: list) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def failures(events: list) -> list[ProviderFailed]:
    return [event for event in events if isinstance(event, ProviderFailed)]


@pytest.fixture
async def llm(fake_llm):
    """The fake server, with fast timeouts; closes this test loop's SDK clients after."""
    yield fake_llm
    await aclose_clients()


@pytest.fixture
def fast_timeouts(settings):
    settings.LLM_FIRST_TOKEN_TIMEOUT = 0.5
    settings.LLM_STALL_TIMEOUT = 0.5
    settings.LLM_TOTAL_TIMEOUT = 10.0


# --- the happy path and the order -------------------------------------------------
async def test_first_configured_provider_answers_with_the_request_it_was_given(llm):
    llm.openai.enqueue(Script(text="Refunds take up to 14 days [1]."))

    events, result = await collect(request(temperature=0.7, max_tokens=300))

    assert deltas(events) == result.text == "Refunds take up to 14 days [1]."
    assert result.providers == ["openai"]
    assert result.finish_reason == "stop"
    assert not result.incomplete
    assert len([e for e in events if isinstance(e, TextDelta)]) == 7
    (sent,) = llm.requests_for("openai")
    assert sent.headers["authorization"] == "Bearer sk-fake-openai-key"
    body = sent.body
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.7
    # A compatible server (OPENAI_BASE_URL is set) gets the parameter they all read.
    assert body["max_tokens"] == 300
    system, user = body["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("You are the shop's assistant.")
    assert (
        '<passage number="1" source="Returns policy (https://shop.example/returns)">\nRefunds are issued within 14 days'
        in system["content"]
    )
    assert user == {"role": "user", "content": "How long do refunds take?"}
    assert llm.requests_for("anthropic") == []


async def test_openai_without_base_url_uses_max_completion_tokens(llm, settings):
    settings.OPENAI_MAX_TOKENS_PARAM = "max_completion_tokens"
    await collect(request(max_tokens=123))
    body = llm.requests_for("openai")[0].body
    assert body["max_completion_tokens"] == 123
    assert "max_tokens" not in body


async def test_a_model_that_refuses_temperature_and_max_tokens_is_adapted_to(llm, settings):
    settings.OPENAI_MODEL = "gpt-5-mini-adaptation-test"
    no_temperature = {
        "error": {
            "message": "Unsupported value: 'temperature' does not support 0.3 with this model. "
            "Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    }
    no_max_tokens = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    llm.openai.enqueue(
        Script(failure="server_error", status=400, error_body=no_temperature),
        Script(failure="server_error", status=400, error_body=no_max_tokens),
        Script(text="Adapted."),
        Script(text="Learnt."),
    )

    events, result = await collect(request(max_tokens=200))
    _, again = await collect(request(max_tokens=200))

    assert result.text == "Adapted."
    assert result.providers == ["openai"]
    assert len(failures(events)) == 2
    first, second, third, fourth = (r.body for r in llm.requests_for("openai"))
    assert first["temperature"] == 0.3 and first["max_tokens"] == 200
    assert "temperature" not in second and second["max_tokens"] == 200
    assert "temperature" not in third and third["max_completion_tokens"] == 200 and "max_tokens" not in third
    # Learnt for the process: the next answer asks the right way at once.
    assert again.text == "Learnt."
    assert "temperature" not in fourth and fourth["max_completion_tokens"] == 200
    assert llm.requests_for("anthropic") == []


async def test_an_unexplained_400_moves_on_without_retrying(llm):
    refusal = {"error": {"message": "Invalid model.", "type": "invalid_request_error", "param": "model"}}
    llm.openai.enqueue(Script(failure="server_error", status=400, error_body=refusal))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert (failed.reason, failed.retryable) == ("request refused (400)", False)
    assert len(llm.requests_for("openai")) == 1
    assert result.providers == ["anthropic"]


async def test_preferred_provider_goes_first_and_gets_the_bots_model(llm):
    llm.anthropic.enqueue(Script(text="From Claude."))

    _, result = await collect(request(preferred_provider="anthropic", model="claude-opus-4-5", temperature=1.6))

    assert result.text == "From Claude."
    assert result.providers == ["anthropic"]
    (sent,) = llm.requests_for("anthropic")
    assert sent.body["model"] == "claude-opus-4-5"
    # The current Messages API has no sampling parameters.
    assert "temperature" not in sent.body
    assert sent.body["system"].startswith("You are the shop's assistant.")
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "How long do refunds take?"}]}
    ]
    assert llm.requests_for("openai") == []


async def test_the_bots_model_is_not_sent_to_a_fallback_provider(llm):
    llm.anthropic.enqueue(Script(failure="server_error"))

    await collect(request(preferred_provider="anthropic", model="claude-opus-4-5"))

    assert llm.requests_for("anthropic")[0].body["model"] == "claude-opus-4-5"
    assert llm.requests_for("openai")[0].body["model"] == "gpt-4o-mini"


async def test_providers_without_a_key_are_skipped(llm, settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    llm.anthropic.enqueue(Script(text="Anthropic here."))

    _, result = await collect(request())

    assert result.providers == ["anthropic"]
    assert llm.requests_for("openai") == []


async def test_with_no_key_at_all_the_extractive_answerer_answers(settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = ""
    settings.LLM_PROVIDERS = ["openai", "anthropic"]

    events, result = await collect(request())

    assert result.providers == ["extractive"]
    assert result.text.startswith(INTRO)
    assert "Refunds are issued within 14 days of receiving the returned item." in result.text
    assert result.text.endswith("[1]")
    assert failures(events) == []


async def test_an_unknown_provider_name_in_settings_is_a_configuration_error(settings):
    settings.LLM_PROVIDERS = ["openai", "gemini"]
    with pytest.raises(ImproperlyConfigured, match="gemini"):
        await collect(request())


async def test_sdk_clients_never_retry_and_use_short_timeouts(llm, settings):
    settings.LLM_CONNECT_TIMEOUT = 3.0
    settings.LLM_FIRST_TOKEN_TIMEOUT = 15.0
    settings.LLM_STALL_TIMEOUT = 10.0
    for client in (openai_client(), anthropic_client()):
        assert client.max_retries == 0
        assert client.timeout.connect == 3.0
        assert client.timeout.read == 16.0
        assert client.timeout.pool == 3.0
    # One client per loop and configuration: the connection pool is reused.
    assert openai_client() is openai_client()


async def test_sdk_clients_stream_over_aiohttp_unless_told_otherwise(llm, settings):
    import anthropic
    import httpx2
    import openai

    assert isinstance(openai_client()._client, openai.DefaultAioHttpClient)
    assert isinstance(anthropic_client()._client, anthropic.DefaultAioHttpClient)
    settings.LLM_HTTP_CLIENT = "httpx"
    for client, sdk in ((openai_client(), openai), (anthropic_client(), anthropic)):
        assert isinstance(client._client, httpx2.AsyncClient)
        assert not isinstance(client._client, sdk.DefaultAioHttpClient)
    settings.LLM_HTTP_CLIENT = "requests"
    with pytest.raises(ImproperlyConfigured, match="LLM_HTTP_CLIENT"):
        openai_client()


async def test_clients_made_after_aclose_clients_stay_open(llm):
    """The closed clients' guard, collected, must not close what the loop uses next."""
    import asyncio
    import gc

    first = openai_client()
    await aclose_clients()
    assert first.is_closed()
    second = openai_client()
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)  # the collected guard's aclose() runs on the loop
    assert not second.is_closed()
    assert openai_client() is second
    _, result = await collect(request())
    assert result.providers == ["openai"]


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("ClientConnectorError", "connection failed"),
        ("ServerDisconnectedError", "connection failed"),
        ("ConnectionTimeoutError", "timed out"),
        (None, "timed out"),
    ],
)
def test_an_openai_timeout_says_what_the_aiohttp_transport_wrapped(cause, reason):
    """The openai SDK's aiohttp transport turns every aiohttp connection error into a
    ConnectTimeout; the provider reports what really happened."""
    import aiohttp
    import httpx2
    import openai

    from bots.llm.providers.openai_chat import classify

    request_ = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    exc = openai.APITimeoutError(request=request_)
    exc.__cause__ = httpx2.ConnectTimeout("mapped by the transport")
    if cause == "ClientConnectorError":
        os_error = ConnectionRefusedError(111, "Connection refused")
        exc.__cause__.__cause__ = aiohttp.ClientConnectorError(None, os_error)
    elif cause is not None:
        exc.__cause__.__cause__ = getattr(aiohttp, cause)()
    assert classify(exc).reason == reason


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_clients_of_a_loop_made_for_one_call_are_closed_with_it(fake_llm, settings, transport):
    """A Celery task's summary runs on a loop async_to_sync makes and shuts down for it."""
    import asyncio

    from asgiref.sync import async_to_sync

    from bots.llm import clients

    settings.LLM_HTTP_CLIENT = transport
    fake_llm.openai.enqueue(Script(text="Summarised."))
    seen = {}

    async def call():
        seen["loop"], seen["client"] = asyncio.get_running_loop(), openai_client()
        return await collect(request())

    _, result = async_to_sync(call)()

    assert result.text == "Summarised."
    assert seen["client"].is_closed()
    assert seen["loop"] not in clients._clients


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_each_transport_streams_each_provider(llm, settings, transport, provider):
    settings.LLM_HTTP_CLIENT = transport
    settings.LLM_PROVIDERS = [provider]
    getattr(llm, provider).enqueue(Script(text="Refunds take up to 14 days [1].", tokens_per_second=200))

    events, result = await collect(request())

    assert deltas(events) == result.text == "Refunds take up to 14 days [1]."
    assert len([e for e in events if isinstance(e, TextDelta)]) == 7
    assert result.providers == [provider]
    assert result.usage[0].output_tokens > 0


# --- failures before the first token -------------------------------------------------
@pytest.mark.parametrize("failure", ["server_error", "overloaded"])
async def test_openai_server_failure_moves_to_anthropic_without_showing_anything(llm, failure):
    llm.openai.enqueue(Script(failure=failure))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert failed.provider == "openai"
    assert failed.retryable is True
    assert failed.mid_stream is False
    assert deltas(events) == result.text == "Anthropic answers."
    assert result.providers == ["anthropic"]
    assert len(llm.requests_for("openai")) == 1


async def test_anthropic_overloaded_529_moves_to_the_next_provider(llm):
    llm.anthropic.enqueue(Script(failure="overloaded"))
    llm.openai.enqueue(Script(text="OpenAI answers."))

    events, result = await collect(request(preferred_provider="anthropic"))

    (failed,) = failures(events)
    assert (failed.provider, failed.reason, failed.retryable) == ("anthropic", "overloaded", True)
    assert result.providers == ["openai"]
    assert len(llm.requests_for("anthropic")) == 1


async def test_429_is_retried_once_after_retry_after_then_succeeds(llm, settings):
    settings.LLM_RETRY_AFTER_MAX = 2.0
    llm.openai.enqueue(Script(failure="rate_limit", retry_after=0.3), Script(text="Second try works."))

    started = time.monotonic()
    events, result = await collect(request())
    elapsed = time.monotonic() - started

    assert result.text == "Second try works."
    assert result.providers == ["openai"]
    first, second = llm.requests_for("openai")
    assert second.received_at - first.received_at >= 0.3
    assert elapsed >= 0.3
    assert [f.reason for f in failures(events)] == ["rate limited (429)"]
    assert llm.requests_for("anthropic") == []


async def test_429_retry_is_bounded_then_the_next_provider_answers(llm, settings):
    settings.LLM_RATE_LIMIT_RETRIES = 1
    llm.openai.enqueue(Script(failure="rate_limit", retry_after=0.1), Script(failure="rate_limit", retry_after=0.1))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    events, result = await collect(request())

    assert len(llm.requests_for("openai")) == 2
    assert [f.provider for f in failures(events)] == ["openai", "openai"]
    assert result.providers == ["anthropic"]


async def test_429_whose_retry_after_exceeds_the_cap_is_not_waited_for(llm, settings):
    settings.LLM_RETRY_AFTER_MAX = 1.0
    llm.openai.enqueue(Script(failure="rate_limit", retry_after=30))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    started = time.monotonic()
    _, result = await collect(request())

    assert time.monotonic() - started < 5
    assert len(llm.requests_for("openai")) == 1
    assert result.providers == ["anthropic"]


async def test_anthropic_429_honours_retry_after_too(llm):
    llm.anthropic.enqueue(Script(failure="rate_limit", retry_after=0.2), Script(text="Claude, second try."))

    _, result = await collect(request(preferred_provider="anthropic"))

    assert result.text == "Claude, second try."
    assert len(llm.requests_for("anthropic")) == 2


async def test_openai_quota_error_is_not_retried(llm):
    llm.openai.enqueue(Script(failure="quota"))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert failed.retryable is False
    assert "insufficient_quota" in failed.reason
    assert len(llm.requests_for("openai")) == 1
    assert result.providers == ["anthropic"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (None, None),  # 400 "Your credit balance is too low"
        (402, {"type": "error", "error": {"type": "billing_error", "message": "Payment required."}}),
        (
            429,
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "Monthly spend limit reached.",
                    "details": {"error_code": "enforced_spend_limit_reached"},
                },
            },
        ),
    ],
    ids=["credit-balance", "billing-402", "spend-limit-429"],
)
async def test_anthropic_billing_errors_are_not_retried(llm, status, body):
    failure = "quota" if status is None else "server_error"
    llm.anthropic.enqueue(Script(failure=failure, status=status, error_body=body, retry_after=0.1))
    llm.openai.enqueue(Script(text="OpenAI answers."))

    events, result = await collect(request(preferred_provider="anthropic"))

    (failed,) = failures(events)
    assert failed.provider == "anthropic"
    assert failed.retryable is False
    assert len(llm.requests_for("anthropic")) == 1
    assert result.providers == ["openai"]


@pytest.mark.parametrize("failure", ["hang", "hang_after_headers"])
async def test_no_first_token_in_time_moves_on_and_hangs_up(llm, fast_timeouts, failure):
    llm.openai.enqueue(Script(failure=failure))
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    started = time.monotonic()
    events, result = await collect(request())

    assert time.monotonic() - started < 3
    (failed,) = failures(events)
    assert failed.reason == "no first token within 0.5s"
    assert failed.retryable is True
    assert result.providers == ["anthropic"]
    (hung,) = llm.requests_for("openai")
    assert await llm.until(lambda: hung.client_disconnected, timeout=2)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_connection_refused_moves_on(llm, settings, transport):
    import socket

    settings.LLM_HTTP_CLIENT = transport
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port}/v1"
    llm.anthropic.enqueue(Script(text="Anthropic answers."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert failed.reason == "connection failed"
    assert result.providers == ["anthropic"]


async def test_every_provider_failing_raises_unavailable(llm, settings):
    settings.LLM_PROVIDERS = ["openai", "anthropic"]
    llm.openai.enqueue(Script(failure="server_error"))
    llm.anthropic.enqueue(Script(failure="overloaded"))

    seen = []
    with pytest.raises(Unavailable):
        async for event in stream_chat(request()):
            seen.append(event)

    assert [(e.provider, e.mid_stream) for e in seen] == [("openai", False), ("anthropic", False)]
    assert not any(isinstance(e, TextDelta) for e in seen)


# --- failures mid-answer: the next provider continues ----------------------------
async def test_openai_cut_mid_answer_is_continued_by_anthropic_with_a_prefill(llm):
    llm.openai.enqueue(Script(text="Refunds are issued within fourteen days", failure="cut", fail_after_tokens=3))
    llm.anthropic.enqueue(Script(text=" within fourteen days of the return."))

    events, result = await collect(request())

    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts[:3] == ["Refunds", " are", " issued"]
    (failed,) = failures(events)
    assert failed.provider == "openai"
    assert failed.mid_stream is True
    # The failure comes after the first deltas and more deltas follow it.
    assert events.index(failed) == 3
    assert any(isinstance(e, TextDelta) for e in events[4:])
    assert result.text == "Refunds are issued within fourteen days of the return."
    assert deltas(events) == result.text
    assert result.providers == ["openai", "anthropic"]
    assert not result.incomplete
    continued = llm.requests_for("anthropic")[0].body["messages"]
    assert continued[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Refunds are issued"}]}
    assert continued[-2]["role"] == "user"


@pytest.mark.parametrize(("broken", "other"), [("openai", "anthropic"), ("anthropic", "openai")])
async def test_an_aiohttp_error_mid_answer_is_a_broken_stream_the_next_provider_continues(
    llm, settings, monkeypatch, broken, other
):
    """An aiohttp error its SDK's transport does not translate to an httpx one still
    ends only this provider's stream, not the answer."""
    import importlib

    import aiohttp

    transport = importlib.import_module(f"{broken}._vendor.httpx_aiohttp.transport")
    real_iter = transport.AiohttpResponseStream.__aiter__

    async def breaks_after_four_reads(self):
        reads = 0
        async for chunk in real_iter(self):
            yield chunk
            reads += 1
            if reads == 4:
                raise aiohttp.ClientError("connection lost mid-body")

    monkeypatch.setattr(transport.AiohttpResponseStream, "__aiter__", breaks_after_four_reads)
    settings.LLM_PROVIDERS = [broken, other]
    words = " ".join(f"w{i}" for i in range(30))
    getattr(llm, broken).enqueue(Script(text=words, tokens_per_second=100))
    getattr(llm, other).enqueue(Script(text="and the rest."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert (failed.provider, failed.mid_stream) == (broken, True)
    assert failed.reason == "stream broken: ClientError"
    assert isinstance(events[0], TextDelta) and events.index(failed) > 0
    assert result.providers == [broken, other]
    assert result.text.endswith("and the rest.")


async def test_a_model_that_refuses_prefills_is_asked_to_continue_by_instruction(llm, settings):
    settings.ANTHROPIC_MODEL = "claude-without-prefill"
    refusal = {"type": "error", "error": {"type": "invalid_request_error", "message": "Prefill is not supported."}}
    llm.openai.enqueue(Script(text="Refunds are issued within 14 days", failure="cut", fail_after_tokens=3))
    llm.anthropic.enqueue(
        Script(failure="server_error", status=400, error_body=refusal),
        Script(text="within 14 days of the return."),
    )

    events, result = await collect(request())

    assert result.text == "Refunds are issued within 14 days of the return."
    assert result.providers == ["openai", "anthropic"]
    with_prefill, by_instruction = llm.requests_for("anthropic")
    assert with_prefill.body["messages"][-1]["role"] == "assistant"
    assert by_instruction.body["messages"][-2] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Refunds are issued"}],
    }
    assert "Continue it exactly where it stopped" in by_instruction.body["messages"][-1]["content"][0]["text"]
    assert [f.reason for f in failures(events)][-1] == "model does not support prefill; continuing by instruction"


async def test_anthropic_stream_error_mid_answer_is_continued_by_openai(llm):
    llm.anthropic.enqueue(Script(text="Items must be unused and", failure="error_event", fail_after_tokens=2))
    llm.openai.enqueue(Script(text="be unused and in their original box."))

    events, result = await collect(request(preferred_provider="anthropic"))

    (failed,) = failures(events)
    assert (failed.provider, failed.mid_stream, failed.retryable) == ("anthropic", True, True)
    assert result.text == "Items must be unused and in their original box."
    assert result.providers == ["anthropic", "openai"]
    messages = llm.requests_for("openai")[0].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": "Items must"}
    assert messages[-1]["role"] == "user"
    assert "Continue it exactly where it stopped" in messages[-1]["content"]


async def test_a_stall_mid_answer_times_out_and_is_continued(llm, fast_timeouts):
    llm.openai.enqueue(Script(text="Refunds are issued within 14 days", failure="stall", fail_after_tokens=2))
    llm.anthropic.enqueue(Script(text=" issued within 14 days."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert failed.reason == "stalled: nothing for 0.5s"
    assert failed.mid_stream is True
    assert result.text == "Refunds are issued within 14 days."
    assert result.providers == ["openai", "anthropic"]
    (stalled,) = llm.requests_for("openai")
    assert await llm.until(lambda: stalled.client_disconnected, timeout=2)


async def test_the_total_timeout_bounds_a_slow_answer(llm, settings):
    settings.LLM_TOTAL_TIMEOUT = 0.6
    llm.openai.enqueue(Script(text="one two three four five six seven eight nine ten", tokens_per_second=5))
    llm.anthropic.enqueue(Script(text="Quick answer."))

    events, result = await collect(request())

    (failed,) = failures(events)
    assert failed.reason == "no complete answer within 0.6s"
    assert failed.mid_stream is True
    assert result.providers == ["openai", "anthropic"]


async def test_when_every_model_fails_mid_answer_extractive_appends_its_quotes(llm):
    llm.openai.enqueue(Script(text="Refunds usually take about two", failure="cut", fail_after_tokens=4))
    llm.anthropic.enqueue(Script(failure="overloaded"))

    events, result = await collect(request())

    assert [(f.provider, f.mid_stream) for f in failures(events)] == [("openai", True), ("anthropic", True)]
    assert result.providers == ["openai", "extractive"]
    assert result.text.startswith("Refunds usually take about\n\n" + CONTINUATION_INTRO)
    assert '"Refunds are issued within 14 days of receiving the returned item.' in result.text
    assert deltas(events) == result.text


async def test_an_answer_cut_with_nobody_left_to_continue_is_returned_incomplete(llm, settings):
    settings.LLM_PROVIDERS = ["openai"]
    llm.openai.enqueue(Script(text="Refunds usually take about two weeks", failure="cut", fail_after_tokens=3))

    _, result = await collect(request())

    assert result.text == "Refunds usually take"
    assert result.incomplete is True
    assert result.finish_reason == "error"
    assert result.providers == ["openai"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stream_broken_after_its_finish_reason_is_a_whole_answer(llm, provider):
    getattr(llm, provider).enqueue(Script(text="The whole answer.", failure="cut_before_end"))

    events, result = await collect(request(preferred_provider=provider))

    assert failures(events) == []
    assert result.text == "The whole answer."
    assert result.providers == [provider]
    assert not result.incomplete
    assert len(llm.requests) == 1


async def test_length_finish_marks_the_answer_incomplete(llm):
    llm.openai.enqueue(Script(text="A long answer that", finish_reason="length"))
    _, result = await collect(request())
    assert result.incomplete is True
    assert result.finish_reason == "length"


async def test_extractive_says_when_it_finds_nothing(settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    _, result = await collect(request("What is the capital of France?"))
    assert result.text == NOT_FOUND


# --- continuation joining ----------------------------------------------------------
@pytest.mark.parametrize(
    ("streamed", "continuation", "in_place", "expected"),
    [
        # A prefill continuation writes its own spaces, even mid-word.
        ("Refunds are issued", " within 14 days.", True, " within 14 days."),
        ("Refunds are iss", "ued within 14 days.", True, "ued within 14 days."),
        # A new message never starts with the space between two words.
        ("Refunds are issued", "within 14 days.", False, " within 14 days."),
        ("Refunds are issued\n", "Items must be unused.", False, "Items must be unused."),
        # Repeats the tail of what the reader has.
        ("Refunds are issued within", "are issued within 14 days.", False, " 14 days."),
        # Starts the whole answer again.
        ("Refunds are issued", "Refunds are issued within 14 days.", False, " within 14 days."),
        # A new sentence after a full stop gets its space back, prefill or not.
        ("Refunds take 14 days.", "Items must be unused.", True, " Items must be unused."),
        # A short coincidence is not an overlap.
        ("It is", "is that so", True, "is that so"),
    ],
)
def test_join_continuation(streamed, continuation, in_place, expected):
    assert join_continuation(streamed, continuation, in_place=in_place) == expected


async def test_a_continuation_that_repeats_the_last_words_is_not_shown_twice(llm):
    llm.anthropic.enqueue(Script(text="Items must be unused and complete", failure="cut", fail_after_tokens=4))
    llm.openai.enqueue(Script(text="must be unused and in their original box."))

    events, result = await collect(request(preferred_provider="anthropic"))

    assert result.text == "Items must be unused and in their original box."
    assert deltas(events) == result.text


async def test_a_continuation_that_restates_a_long_answer_is_not_shown_twice(llm):
    first = "The returns desk accepts unused items with a receipt for a full refund, and it also exchanges sizes"
    llm.openai.enqueue(Script(text=first + " for free.", failure="cut", fail_after_tokens=len(first.split())))
    llm.anthropic.enqueue(Script(text=first + " for free."))

    _, result = await collect(request())

    assert result.text == first + " for free."
