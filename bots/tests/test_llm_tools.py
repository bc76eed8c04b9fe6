"""The tool registry, what each context is offered, and the tool loop on both providers.

The tools here are test-only: ``list_documents`` reads the real database,
``record_note`` stands for a tool that writes. The shipped ``search_knowledge`` is
checked for its registration and argument validation; its end-to-end test lives
with the retrieval selector it calls.
"""

from __future__ import annotations

import json
import logging

import pytest

from bots.llm import ChatMessage, ChatRequest, ChatResult, ProviderFailed, TextDelta, ToolCalled, stream_chat, tools
from bots.llm.clients import aclose_clients
from bots.llm.tools import ToolContext, ToolSpec, validate_arguments
from bots.tests.factories import BotFactory, DocumentFactory
from chatbase.core.errors import NotFound
from chatbase.core.tests.factories import UserFactory
from chatbase.testing.fake_llm import Script, fake_llm_fixture, fake_llm_server_fixture  # noqa: F401

notes: list[tuple[int, str]] = []


def list_documents(context: ToolContext, *, title_contains: str, limit: int = 10) -> dict:
    documents = context.bot.documents.filter(title__icontains=title_contains).order_by("title")[:limit]
    return {"results": [document.title for document in documents]}


def record_note(context: ToolContext, *, text: str) -> str:
    notes.append((context.bot.pk, text))
    return "Saved."


def broken_tool(context: ToolContext) -> dict:
    raise RuntimeError("database on fire")


def missing_thing(context: ToolContext) -> dict:
    raise NotFound("No such order.")


LIST_DOCUMENTS = ToolSpec(
    name="list_documents",
    description="List the bot's documents whose title contains a text.",
    parameters={
        "type": "object",
        "properties": {
            "title_contains": {"type": "string", "minLength": 1},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        "required": ["title_contains"],
    },
    writes=False,
    handler=list_documents,
)
RECORD_NOTE = ToolSpec(
    name="record_note",
    description="Save a note about the visitor.",
    parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    writes=True,
    handler=record_note,
)
BROKEN = ToolSpec("broken_tool", "Always fails.", {"type": "object", "properties": {}}, False, broken_tool)
MISSING = ToolSpec(
    "missing_thing", "Raises a domain error.", {"type": "object", "properties": {}}, False, missing_thing
)
TEST_TOOLS = [LIST_DOCUMENTS, RECORD_NOTE, BROKEN, MISSING]


@pytest.fixture
def registered_tools():
    for spec in TEST_TOOLS:
        tools.register(spec)
    notes.clear()
    yield
    for spec in TEST_TOOLS:
        tools.unregister(spec.name)


@pytest.fixture
async def llm(fake_llm, registered_tools):
    yield fake_llm
    await aclose_clients()


@pytest.fixture
def bot(transactional_db):
    bot = BotFactory()
    for title in ("Setup guide", "Pricing guide", "Changelog"):
        DocumentFactory(bot=bot, title=title)
    return bot


def chat(context: ToolContext | None, *, offered: list[ToolSpec] | None = None, **kwargs) -> ChatRequest:
    return ChatRequest(
        system_prompt="You are helpful.",
        messages=[ChatMessage(role="user", content="Which guides do you have?")],
        tools=offered if offered is not None else tools.specs_for(context),
        tool_context=context,
        **kwargs,
    )


async def run(chat_request: ChatRequest) -> tuple[list, ChatResult]:
    events = [event async for event in stream_chat(chat_request)]
    return events[:-1], events[-1]


# --- registry -----------------------------------------------------------------------
def test_registry_lists_tools_and_never_offers_writing_tools_to_anonymous_visitors(registered_tools):
    assert tools.get("list_documents") is LIST_DOCUMENTS
    assert tools.get("nope") is None
    names = [spec.name for spec in tools.all_specs()]
    assert names == sorted(names)
    assert {"list_documents", "record_note", "search_knowledge"} <= set(names)

    anonymous = tools.specs_for(ToolContext(bot=None, visitor_id="v1"))
    assert "record_note" not in {spec.name for spec in anonymous}
    assert "list_documents" in {spec.name for spec in anonymous}
    assert all(not spec.writes for spec in anonymous)

    owner_context = ToolContext(bot=None, owner=object())
    assert "record_note" in {spec.name for spec in tools.specs_for(owner_context)}


def test_registering_a_different_tool_under_a_taken_name_fails(registered_tools):
    tools.register(LIST_DOCUMENTS)  # the same tool again is harmless
    impostor = ToolSpec("list_documents", "Other.", {"type": "object"}, False, record_note)
    with pytest.raises(ValueError, match="already registered"):
        tools.register(impostor)


def test_tool_names_and_schemas_are_checked():
    with pytest.raises(ValueError, match="letters, digits"):
        ToolSpec("has space", "x", {"type": "object"}, False, record_note)
    with pytest.raises(ValueError, match="type 'object'"):
        ToolSpec("ok", "x", {"type": "string"}, False, record_note)


def test_search_knowledge_is_registered_read_only_with_a_bounded_k():
    spec = tools.get("search_knowledge")
    assert spec is not None
    assert spec.writes is False
    assert spec.parameters["required"] == ["query"]

    assert validate_arguments(spec, {"query": "refunds", "k": 3}) == ({"query": "refunds", "k": 3}, [])
    assert validate_arguments(spec, {"query": "refunds"}) == ({"query": "refunds"}, [])
    assert validate_arguments(spec, {"query": "refunds", "k": 11})[1] == ["'k' must be at most 10"]
    assert validate_arguments(spec, {"query": "refunds", "k": 0})[1] == ["'k' must be at least 1"]
    assert validate_arguments(spec, {"query": "refunds", "k": "3"})[1] == ["'k' must be of type integer"]
    assert validate_arguments(spec, {"query": "refunds", "k": True})[1] == ["'k' must be of type integer"]
    assert validate_arguments(spec, {"k": 3})[1] == ["'query' is required"]
    assert validate_arguments(spec, {"query": ""})[1] == ["'query' must not be empty"]
    assert validate_arguments(spec, {"query": "x", "sql": "drop"})[1] == [
        "'sql' is not an argument of search_knowledge"
    ]
    assert validate_arguments(spec, ["refunds"])[1] == ["arguments must be a JSON object"]


# --- the tool loop ------------------------------------------------------------------
async def test_openai_tool_loop_runs_the_tool_and_feeds_the_result_back(llm, bot):
    llm.openai.enqueue(
        Script(
            text="", tool_calls=[{"id": "call_1", "name": "list_documents", "arguments": {"title_contains": "guide"}}]
        ),
        Script(text="There is a setup guide and a pricing guide."),
    )

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1")))

    called = [e for e in events if isinstance(e, ToolCalled)]
    assert called == [ToolCalled("list_documents", {"title_contains": "guide"}, "2 results")]
    assert result.text == "There is a setup guide and a pricing guide."
    assert result.providers == ["openai"]
    assert [u.provider for u in result.usage] == ["openai", "openai"]

    first, second = llm.requests_for("openai")
    offered = {tool["function"]["name"] for tool in first.body["tools"]}
    assert "list_documents" in offered
    assert "record_note" not in offered
    assert first.body["tools"][0]["type"] == "function"
    assert "tool_choice" not in first.body
    assistant, tool_message = second.body["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "list_documents", "arguments": '{"title_contains": "guide"}'},
        }
    ]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"]) == {"results": ["Pricing guide", "Setup guide"]}


async def test_anthropic_tool_loop_with_parallel_calls(llm, bot):
    llm.anthropic.enqueue(
        Script(
            text="Let me look.",
            tool_calls=[
                {"id": "toolu_1", "name": "list_documents", "arguments": {"title_contains": "setup"}},
                {"id": "toolu_2", "name": "list_documents", "arguments": {"title_contains": "change", "limit": 1}},
            ],
        ),
        Script(text=" You have a setup guide and a changelog."),
    )

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1"), preferred_provider="anthropic"))

    assert [e.result_summary for e in events if isinstance(e, ToolCalled)] == ["1 result", "1 result"]
    assert result.text == "Let me look. You have a setup guide and a changelog."
    first, second = llm.requests_for("anthropic")
    assert {tool["name"] for tool in first.body["tools"]} >= {"list_documents"}
    assert first.body["tools"][0]["input_schema"]["type"] == "object"
    assistant, results = second.body["messages"][-2:]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "list_documents", "input": {"title_contains": "setup"}},
            {
                "type": "tool_use",
                "id": "toolu_2",
                "name": "list_documents",
                "input": {"title_contains": "change", "limit": 1},
            },
        ],
    }
    # Both results in the one user turn that follows.
    assert results["role"] == "user"
    assert [(block["type"], block["tool_use_id"]) for block in results["content"]] == [
        ("tool_result", "toolu_1"),
        ("tool_result", "toolu_2"),
    ]
    assert json.loads(results["content"][1]["content"]) == {"results": ["Changelog"]}


async def test_a_writing_tool_named_by_the_model_is_refused_for_an_anonymous_visitor(llm, bot):
    llm.openai.enqueue(
        Script(text="", tool_calls=[{"id": "call_w", "name": "record_note", "arguments": {"text": "VIP"}}]),
        Script(text="I cannot save notes."),
    )
    everything = list(TEST_TOOLS)

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1"), offered=everything))

    assert notes == []
    (called,) = [e for e in events if isinstance(e, ToolCalled)]
    assert called.result_summary == "error: The tool 'record_note' is not available here."
    first, second = llm.requests_for("openai")
    assert "record_note" not in {tool["function"]["name"] for tool in first.body["tools"]}
    assert json.loads(second.body["messages"][-1]["content"]) == {
        "error": "The tool 'record_note' is not available here."
    }
    assert result.text == "I cannot save notes."


async def test_an_owner_may_use_a_writing_tool(llm, bot):
    owner = await _owner()
    llm.openai.enqueue(
        Script(text="", tool_calls=[{"name": "record_note", "arguments": {"text": "VIP"}}]),
        Script(text="Noted."),
    )

    events, result = await run(chat(ToolContext(bot=bot, owner=owner)))

    assert notes == [(bot.pk, "VIP")]
    assert [e.result_summary for e in events if isinstance(e, ToolCalled)] == ["Saved."]
    assert result.text == "Noted."


async def test_bad_arguments_come_back_to_the_model_as_an_error(llm, bot):
    llm.openai.enqueue(
        Script(text="", tool_calls=[{"id": "c1", "name": "list_documents", "arguments": {"limit": "many"}}]),
        Script(text="", tool_calls=[{"id": "c2", "name": "list_documents", "arguments": '{"title_contains": "gui'}]),
        Script(text="Sorry, I could not look that up."),
    )

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1")))

    summaries = [e.result_summary for e in events if isinstance(e, ToolCalled)]
    assert summaries == [
        "error: Invalid arguments for list_documents: 'title_contains' is required; 'limit' must be of type integer.",
        "error: The arguments were not valid JSON.",
    ]
    assert result.text == "Sorry, I could not look that up."
    third = llm.requests_for("openai")[2].body["messages"]
    assert "error" in json.loads(third[-1]["content"])


async def test_a_failing_tool_is_reported_to_the_model_not_the_visitor(llm, bot, caplog):
    llm.anthropic.enqueue(
        Script(
            text="", tool_calls=[{"name": "broken_tool", "arguments": {}}, {"name": "missing_thing", "arguments": {}}]
        ),
        Script(text="Something went wrong on my side."),
    )

    with caplog.at_level(logging.ERROR, logger="bots.llm.tools"):
        events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1"), preferred_provider="anthropic"))

    assert [e.result_summary for e in events if isinstance(e, ToolCalled)] == [
        "error: The tool 'broken_tool' failed.",
        "error: No such order.",
    ]
    assert "database on fire" not in repr(events)
    assert any("broken_tool" in record.getMessage() for record in caplog.records)
    assert result.text == "Something went wrong on my side."


async def test_tool_rounds_are_bounded_then_the_model_must_answer(llm, bot, settings):
    settings.LLM_MAX_TOOL_ROUNDS = 2
    ask = {"name": "list_documents", "arguments": {"title_contains": "guide"}}
    llm.openai.enqueue(
        Script(text="", tool_calls=[ask]),
        Script(text="", tool_calls=[ask]),
        Script(text="Two guides."),
    )

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1")))

    assert len([e for e in events if isinstance(e, ToolCalled)]) == 2
    requests = llm.requests_for("openai")
    assert len(requests) == 3
    assert "tool_choice" not in requests[1].body
    # The tools stay declared (the history uses them) but may not be called.
    assert requests[2].body["tool_choice"] == "none"
    assert requests[2].body["tools"]
    assert result.text == "Two guides."


async def test_anthropic_last_round_forbids_tools_too(llm, bot, settings):
    settings.LLM_MAX_TOOL_ROUNDS = 1
    llm.anthropic.enqueue(
        Script(text="", tool_calls=[{"name": "list_documents", "arguments": {"title_contains": "guide"}}]),
        Script(text="Done."),
    )

    await run(chat(ToolContext(bot=bot, visitor_id="v1"), preferred_provider="anthropic"))

    assert llm.requests_for("anthropic")[1].body["tool_choice"] == {"type": "none"}


async def test_without_a_tool_context_no_tool_is_offered(llm):
    llm.openai.enqueue(Script(text="Hello."))

    _, result = await run(chat(None, offered=[LIST_DOCUMENTS]))

    assert "tools" not in llm.requests_for("openai")[0].body
    assert result.text == "Hello."


async def test_a_provider_failing_after_a_tool_round_hands_the_history_to_the_next(llm, bot):
    llm.openai.enqueue(
        Script(
            text="", tool_calls=[{"id": "call_9", "name": "list_documents", "arguments": {"title_contains": "setup"}}]
        ),
        Script(failure="server_error"),
    )
    llm.anthropic.enqueue(Script(text="You have a setup guide."))

    events, result = await run(chat(ToolContext(bot=bot, visitor_id="v1")))

    assert [type(e) for e in events if not isinstance(e, TextDelta)] == [ToolCalled, ProviderFailed]
    assert result.providers == ["anthropic"]
    messages = llm.requests_for("anthropic")[0].body["messages"]
    assert messages[-2]["content"] == [
        {"type": "tool_use", "id": "call_9", "name": "list_documents", "input": {"title_contains": "setup"}}
    ]
    assert messages[-1]["content"][0]["tool_use_id"] == "call_9"
    assert json.loads(messages[-1]["content"][0]["content"]) == {"results": ["Setup guide"]}


async def _owner():
    from asgiref.sync import sync_to_async

    return await sync_to_async(UserFactory)()
