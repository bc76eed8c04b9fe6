"""The fake OpenAI/Anthropic server speaks both wire formats well enough for the real SDKs."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from chatbase.testing.fake_llm import FakeLLMServer, Script, split_tokens


@pytest.fixture
def server():
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


def openai_sdk(server: FakeLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=server.openai_base_url, max_retries=0)


def anthropic_sdk(server: FakeLLMServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.anthropic_base_url, max_retries=0)


def test_tokens_keep_their_leading_whitespace():
    assert split_tokens("Hello  big\nworld. ") == ["Hello", "  big", "\nworld.", " "]
    assert "".join(split_tokens(" a b ")) == " a b "


def test_unknown_failures_are_refused():
    with pytest.raises(ValueError, match="Unknown failure"):
        Script(failure="explode")


async def test_openai_non_streaming_completion_with_tool_calls(server):
    server.openai.enqueue(
        Script(text="Checking.", tool_calls=[{"id": "call_7", "name": "lookup", "arguments": {"q": "x"}}], usage=(9, 4))
    )
    async with openai_sdk(server) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    choice = completion.choices[0]
    assert choice.message.content == "Checking."
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].id == "call_7"
    assert choice.message.tool_calls[0].function.arguments == '{"q": "x"}'
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 4)
    (recorded,) = server.requests
    assert recorded.provider == "openai"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.body["messages"] == [{"role": "user", "content": "hi"}]
    assert recorded.completed.is_set()
    assert not recorded.client_disconnected


async def test_anthropic_non_streaming_message(server):
    server.anthropic.enqueue(Script(text="Hello!", model="claude-haiku-4-5-20251001", usage=(12, 3)))
    async with anthropic_sdk(server) as client:
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )

    assert message.content[0].text == "Hello!"
    assert message.model == "claude-haiku-4-5-20251001"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    assert server.requests[0].headers["anthropic-version"]


async def test_streams_are_paced_and_counted(server):
    server.openai.enqueue(Script(text="one two three four five", tokens_per_second=100))
    async with openai_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five"
    # Without include_usage there is no usage chunk, as with the real API.
    assert all(c.usage is None for c in chunks)
    assert server.requests[0].tokens_sent == 5


async def test_the_default_script_answers_when_nothing_is_queued(server):
    server.anthropic.default = Script(text="Default.")
    async with anthropic_sdk(server) as client:
        for _ in range(2):
            message = await client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
            assert message.content[0].text == "Default."
    assert server.anthropic.pending == 0


async def test_a_benchmark_in_another_process_can_change_the_default_answer(server):
    response = httpx.post(f"{server.base_url}/_fake/default", json={"tokens": 3})
    assert response.status_code == 200
    async with openai_sdk(server) as client:
        completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "word0 word1 word2"
    async with anthropic_sdk(server) as client:
        message = await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert message.content[0].text == "word0 word1 word2"


def test_unknown_paths_answer_404_and_are_recorded(server):
    response = httpx.get(f"{server.base_url}/v1/models")
    assert response.status_code == 404
    assert server.requests[0].provider == "unknown"


async def test_connections_are_kept_alive_between_requests(server):
    server.openai.default = Script(text="ok")
    async with openai_sdk(server) as client:
        for _ in range(3):
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert [c async for c in stream]
    assert len(server.requests) == 3
    assert not any(r.client_disconnected for r in server.requests)


async def test_a_scripted_cut_is_not_reported_as_the_client_leaving(server):
    server.openai.enqueue(Script(text="one two three four", failure="cut", fail_after_tokens=2))
    async with openai_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass

    (recorded,) = server.requests
    assert recorded.tokens_sent == 2
    assert not recorded.completed.is_set()
    assert not recorded.client_disconnected
