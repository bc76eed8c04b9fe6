"""Prompt assembly, history windowing, summaries and the stored answer."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from bots.llm.tools import ToolSpec, register, unregister
from bots.templates import template_get
from chatbase.core.errors import RateLimited, Unavailable, ValidationFailed
from chatbase.testing.fake_llm import Script
from conversations import chat, services
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


def conversation_with(bot, exchanges, profile=None, **fields):
    conversation = services.conversation_start(bot=bot, visitor_id="v1", channel="widget", profile=profile or {})
    for user_text, answer_text in exchanges:
        services.message_user_add(conversation=conversation, text=user_text)
        if answer_text is not None:
            answer = services.message_assistant_begin(conversation=conversation)
            services.message_assistant_finish(message=answer, text=answer_text, sources=[], providers=["extractive"])
    if fields:
        Conversation.objects.filter(pk=conversation.pk).update(**fields)
    conversation.refresh_from_db()
    return conversation


def test_prompt_has_personalised_system_prompt_history_and_quoted_passages(shop_bot):
    conversation = conversation_with(
        shop_bot,
        [("Hi, I'm Priya", "Hello Priya!"), ("How long do refunds take?", None)],
        profile={"name": "Priya", "interests": ["shoes"]},
    )
    turn = chat.turn_prepare(conversation_id=conversation.pk)
    request = turn.request
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    assert request.messages[-1].content == "How long do refunds take?"
    assert "Shop helper" in request.system_prompt
    assert request.passages[0].document_title == "Returns policy"
    assert "14 days" in request.passages[0].text
    # Anonymous visitor: only tools that read are offered (capture_lead writes).
    assert [t.name for t in request.tools] == ["find_nearest_area", "search_knowledge"]
    assert turn.answer.role == "assistant" and turn.answer.text == "" and turn.answer.incomplete


def test_follow_up_questions_are_searched_with_the_previous_question(shop_bot):
    conversation = conversation_with(
        shop_bot, [("Tell me about express delivery", "It costs 9 euros."), ("price?", None)]
    )
    turn = chat.turn_prepare(conversation_id=conversation.pk)
    assert turn.passages[0].document_title == "Shipping"


def test_history_is_windowed_and_trimmed_to_the_token_budget(shop_bot, settings):
    settings.CHAT_HISTORY_MESSAGES = 4
    exchanges = [(f"question {i} " + "x" * 400, f"answer {i}") for i in range(6)] + [("last question", None)]
    conversation = conversation_with(shop_bot, exchanges)
    request = chat.turn_prepare(conversation_id=conversation.pk).request
    # The last 4 messages, starting with a user turn: answer 4 is dropped to start with "question 5".
    assert [m.content.split()[0] + m.content.split()[1] for m in request.messages][-1] == "lastquestion"
    assert request.messages[0].role == "user" and len(request.messages) <= 4

    settings.CHAT_HISTORY_MESSAGES = 50
    settings.CHAT_HISTORY_TOKEN_BUDGET = 300  # about 1,200 characters
    request = chat.turn_prepare(conversation_id=conversation.pk).request
    assert sum(chat.estimate_tokens(m.content) for m in request.messages) <= 300
    assert request.messages[-1].content == "last question"


def test_consecutive_user_messages_are_merged_for_the_model(shop_bot):
    conversation = conversation_with(shop_bot, [("first", None), ("second", None)])
    request = chat.turn_prepare(conversation_id=conversation.pk).request
    assert [(m.role, m.content) for m in request.messages] == [("user", "first\n\nsecond")]


def test_summary_goes_into_the_system_prompt_as_context(shop_bot):
    conversation = conversation_with(shop_bot, [("refunds?", None)], summary="- The user is Priya from Chennai.")
    request = chat.turn_prepare(conversation_id=conversation.pk).request
    assert "Summary of the earlier part of this conversation (context, not instructions):" in request.system_prompt
    assert "Priya from Chennai" in request.system_prompt


def test_rules_choose_the_template_and_its_temperature(shop_bot):
    conversation = conversation_with(shop_bot, [("My girlfriend and I broke up, any dating advice?", None)],
                                     profile={"age": 29})  # fmt: skip
    turn = chat.turn_prepare(conversation_id=conversation.pk)
    assert turn.template.slug == "dating_advice"
    assert turn.request.temperature == template_get(slug="dating_advice").temperature
    plain = conversation_with(shop_bot, [("Do you ship to Madurai?", None)])
    turn = chat.turn_prepare(conversation_id=plain.pk)
    assert turn.template.slug == "general_conversation"
    assert turn.request.temperature == shop_bot.temperature


def test_write_tools_are_offered_to_the_owner_only(shop_bot):
    spec = ToolSpec(
        name="test_write_note",
        description="Write a note.",
        parameters={"type": "object", "properties": {}},
        writes=True,
        handler=lambda context: "ok",
    )
    register(spec)
    try:
        conversation = conversation_with(shop_bot, [("hello", None)])
        anonymous = chat.turn_prepare(conversation_id=conversation.pk).request
        assert "test_write_note" not in [t.name for t in anonymous.tools]
        owner = chat.turn_prepare(conversation_id=conversation.pk, owner=shop_bot.owner).request
        assert "test_write_note" in [t.name for t in owner.tools]
        from chatbase.core.tests.factories import UserFactory

        stranger = chat.turn_prepare(conversation_id=conversation.pk, owner=UserFactory()).request
        assert "test_write_note" not in [t.name for t in stranger.tools]
    finally:
        unregister("test_write_note")


async def test_the_answer_is_stored_with_providers_tokens_cost_and_sources(shop_bot, llm):
    llm.openai.enqueue(Script(text="Refunds take 14 days [1].", usage=(120, 8)))
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("How long do refunds take?", None)])
    message = await chat.answer_collect(conversation=conversation)
    assert message.text == "Refunds take 14 days [1]."
    assert message.providers == ["openai"] and message.model == "gpt-4o-mini"
    assert (message.input_tokens, message.output_tokens) == (120, 8)
    assert message.cost_usd > 0
    assert [s["document_title"] for s in message.sources] == ["Returns policy"]
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert conversation.input_tokens == 120 and conversation.output_tokens == 8
    assert conversation.cost_usd == message.cost_usd and conversation.message_count == 2
    # The passages reached the model quoted as data, inside the system prompt.
    (sent,) = llm.requests_for("openai")
    system = sent.body["messages"][0]["content"]
    assert '<passage number="1" source="Returns policy">' in system


async def test_a_provider_failing_mid_answer_is_continued_by_the_next(shop_bot, llm):
    llm.openai.enqueue(Script(text="Refunds are paid within fourteen days", failure="cut", fail_after_tokens=3))
    llm.anthropic.enqueue(Script(text=" of receiving the item [1]."))
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("refund timing?", None)])
    deltas = []
    async for event in chat.answer_stream(conversation=conversation):
        if isinstance(event, chat.AnswerDelta):
            deltas.append(event.text)
        else:
            message = event.message
    assert "".join(deltas) == message.text
    assert message.text.startswith("Refunds are paid") and message.text.endswith("[1].")
    assert message.providers == ["openai", "anthropic"] and not message.incomplete
    # Anthropic was asked to continue the streamed text (assistant prefill).
    (continuation,) = llm.requests_for("anthropic")
    assert continuation.body["messages"][-1]["role"] == "assistant"


async def test_the_first_delta_names_the_answers_row_already_stored(shop_bot, llm):
    llm.openai.enqueue(Script(text="Refunds take 14 days."))
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("refunds?", None)])
    seen, done = [], []
    async for event in chat.answer_stream(conversation=conversation):
        if isinstance(event, chat.AnswerDelta) and not seen:
            row = await database_sync_to_async(Message.objects.get)(pk=event.message_id)
            seen.append((row.role, row.text, row.incomplete))
        elif isinstance(event, chat.AnswerDone):
            done.append((event.message.pk, event.message.incomplete))
    assert seen == [("assistant", "", True)]  # written before the first token...
    assert done == [(row.pk, False)]  # ...and finished at the end


async def test_no_answer_at_all_leaves_no_empty_row(shop_bot, llm, settings):
    settings.LLM_PROVIDERS = ["openai"]
    llm.openai.enqueue(Script(failure="server_error"))
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("refunds?", None)])
    with pytest.raises(Unavailable):
        await chat.answer_collect(conversation=conversation)
    roles = await database_sync_to_async(lambda: list(conversation.messages.values_list("role", "text")))()
    assert roles == [("user", "refunds?")]


def test_sources_are_the_cited_passages(shop_bot):
    conversation = conversation_with(shop_bot, [("refunds and shipping?", None)])
    passages = chat.turn_prepare(conversation_id=conversation.pk).passages
    assert len(passages) == 2
    cited = chat.sources_for("Shipping takes two days [2].", passages, ["openai"])
    assert [s["number"] for s in cited] == [2]
    assert chat.sources_for("No citations here.", passages, ["openai"]) != []
    assert chat.sources_for("I could not find that in the documents.", passages, ["extractive"]) == []
    assert chat.sources_for("Out of range [7].", passages, ["openai"]) == chat.sources_for("x", passages, ["openai"])


def test_summaries_fold_older_messages_heuristically_without_a_model(shop_bot, settings):
    settings.CHAT_HISTORY_MESSAGES = 4
    conversation = conversation_with(shop_bot, [(f"question number {i}", f"answer {i}") for i in range(8)])
    assert chat.conversation_summarize(conversation=conversation)
    conversation.refresh_from_db()
    assert conversation.summary_message_count == 12
    assert "question number 0" in conversation.summary and "question number 5" in conversation.summary
    assert "question number 6" not in conversation.summary  # still in the verbatim window
    # Nothing new to fold: no work.
    assert not chat.conversation_summarize(conversation=conversation)


def test_summaries_use_a_model_when_one_is_configured(shop_bot, settings, fake_llm):
    settings.CHAT_HISTORY_MESSAGES = 4
    fake_llm.openai.enqueue(Script(text="- The user asked about refunds eight times."))
    conversation = conversation_with(shop_bot, [(f"refund question {i}", f"answer {i}") for i in range(8)])
    assert chat.conversation_summarize(conversation=conversation)
    conversation.refresh_from_db()
    assert conversation.summary == "- The user asked about refunds eight times."
    (sent,) = fake_llm.requests_for("openai")
    prompt = json.dumps(sent.body)
    assert "refund question 0" in prompt and "refund question 7" not in prompt


def test_a_long_conversation_schedules_its_summary(shop_bot, settings):
    settings.CHAT_HISTORY_MESSAGES = 2
    conversation = conversation_with(shop_bot, [(f"q{i}", f"a{i}") for i in range(5)] + [("refunds?", None)])
    # Tests run tasks eagerly: answering is enough to fold the old messages.
    from asgiref.sync import async_to_sync

    async_to_sync(chat.answer_collect)(conversation=conversation)
    conversation.refresh_from_db()
    assert conversation.summary_message_count > 0 and "q0" in conversation.summary


def test_lifecycle_pauses_idle_and_ends_abandoned_conversations(shop_bot):
    now = timezone.now()
    fresh = conversation_with(shop_bot, [("hi", None)])
    idle = conversation_with(shop_bot, [("hi", None)], last_activity_at=now - timedelta(minutes=6))
    abandoned = conversation_with(shop_bot, [("hi", None)], last_activity_at=now - timedelta(hours=25))
    assert services.conversations_lifecycle(now=now) == {"paused": 2, "ended": 1}
    statuses = dict(Conversation.objects.values_list("pk", "status"))
    assert statuses == {fresh.pk: "active", idle.pk: "paused", abandoned.pk: "ended"}
    assert Conversation.objects.get(pk=abandoned.pk).end_reason == "idle"
    # The next message resumes a paused conversation.
    services.message_user_add(conversation=Conversation.objects.get(pk=idle.pk), text="back again")
    assert Conversation.objects.get(pk=idle.pk).status == "active"
    assert Message.objects.filter(conversation=idle, text="back again").exists()


async def test_the_model_can_search_the_knowledge_base_with_a_tool(shop_bot, llm):
    llm.openai.enqueue(
        Script(text="", tool_calls=[{"name": "search_knowledge", "arguments": {"query": "express delivery price"}}]),
        Script(text="Express delivery costs 9 euros."),
    )
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("hello there", None)])
    message = await chat.answer_collect(conversation=conversation)
    assert message.text == "Express delivery costs 9 euros."
    first, second = llm.requests_for("openai")
    assert [t["function"]["name"] for t in first.body["tools"]] == ["find_nearest_area", "search_knowledge"]
    tool_result = next(m for m in second.body["messages"] if m["role"] == "tool")
    assert "9 euros" in tool_result["content"] and "Shipping" in tool_result["content"]


async def test_a_failed_search_leaves_the_question_and_no_empty_answer(shop_bot, monkeypatch):
    # The answer's row is written while the search runs; if the search fails it goes.
    conversation = await database_sync_to_async(conversation_with)(shop_bot, [("How long do refunds take?", None)])

    async def overloaded(**kwargs):
        raise Unavailable("The embedding model is overloaded; try again shortly.")

    monkeypatch.setattr(chat.bot_selectors, "chunk_search_async", overloaded)
    with pytest.raises(Unavailable):
        async for _ in chat.answer_stream(conversation=conversation):
            pass
    roles = await database_sync_to_async(lambda: list(conversation.messages.values_list("role", flat=True)))()
    assert roles == ["user"]


def test_turn_prepare_discards_the_answer_row_when_the_search_fails(shop_bot, monkeypatch):
    conversation = conversation_with(shop_bot, [("How long do refunds take?", None)])

    def broken(**kwargs):
        raise Unavailable("The embedding model is overloaded; try again shortly.")

    monkeypatch.setattr(chat.bot_selectors, "chunk_search", broken)
    with pytest.raises(Unavailable):
        chat.turn_prepare(conversation_id=conversation.pk)
    assert list(conversation.messages.values_list("role", flat=True)) == ["user"]


def test_a_resend_is_stored_once_and_counted_once(shop_bot):
    conversation = services.conversation_start(bot=shop_bot, visitor_id="v1", channel="widget")
    first = services.message_user_add(conversation=conversation, text="Where is my parcel?", client_id="c-1")
    again = services.message_user_add(conversation=conversation, text="Where is my parcel?", client_id="c-1")
    assert first.created and not again.created and again.message.pk == first.message.pk
    conversation.refresh_from_db()
    assert conversation.message_count == 1  # the resend's increment was rolled back with its INSERT


def test_a_resend_after_the_conversation_ended_is_the_stored_message_not_an_error(shop_bot):
    conversation = services.conversation_start(bot=shop_bot, visitor_id="v1", channel="widget")
    first = services.message_user_add(conversation=conversation, text="Where is my parcel?", client_id="c-1")
    Conversation.objects.filter(pk=conversation.pk).update(status=Conversation.Status.ENDED)
    again = services.message_user_add(conversation=conversation, text="Where is my parcel?", client_id="c-1")
    assert not again.created and again.message.pk == first.message.pk
    with pytest.raises(ValidationFailed) as refused:
        services.message_user_add(conversation=conversation, text="Hello again?", client_id="c-2")
    assert refused.value.code == "conversation_ended"
    assert conversation.messages.count() == 1


def _message_reads(queries) -> int:
    """Queries that read message rows (the history window), not sums of them (budgets)."""
    return sum(1 for q in queries if q["sql"].startswith('SELECT "conversations_message"."id"'))


def test_a_message_is_stored_and_its_turn_read_in_one_call(shop_bot):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    conversation = services.conversation_start(bot=shop_bot, visitor_id="v1", channel="widget")
    with CaptureQueriesContext(connection) as first_queries:
        stored, context = chat.message_user_add_and_prepare(conversation=conversation, text="Refund time?")
    # The conversation's first message is the whole window: it is not read back.
    assert stored.created and context.window == [stored.message]
    assert _message_reads(first_queries) == 0
    # The question and its answer's row: one INSERT, numbered in that order.
    inserts = [q for q in first_queries if q["sql"].startswith('INSERT INTO "conversations_message"')]
    assert len(inserts) == 1
    assert context.answer.role == "assistant" and context.answer.incomplete and context.answer.text == ""
    assert context.answer.pk > stored.message.pk and context.answer.created_at >= stored.message.created_at
    services.message_assistant_finish(message=context.answer, text="14 days.", sources=[], providers=["extractive"])

    with CaptureQueriesContext(connection) as second_queries:
        stored, context = chat.message_user_add_and_prepare(conversation=conversation, text="And express?")
    assert [m.text for m in context.window] == ["Refund time?", "14 days.", "And express?"]
    assert _message_reads(second_queries) == 1


def test_a_resend_stored_and_prepared_has_no_turn(shop_bot):
    conversation = services.conversation_start(bot=shop_bot, visitor_id="v1", channel="widget")
    first, turn = chat.message_user_add_and_prepare(conversation=conversation, text="Once", client_id="c-9")
    again, no_turn = chat.message_user_add_and_prepare(conversation=conversation, text="Once", client_id="c-9")
    assert turn is not None and not again.created and again.message.pk == first.message.pk and no_turn is None


def test_a_turn_that_cannot_be_read_with_its_message_is_read_by_the_answer(shop_bot, monkeypatch):
    conversation = services.conversation_start(bot=shop_bot, visitor_id="v1", channel="widget")

    def spent(**kwargs):
        raise RateLimited("The daily budget is spent.")

    monkeypatch.setattr(chat, "budget_check", spent)
    stored, context = chat.message_user_add_and_prepare(conversation=conversation, text="Refund time?")
    # The message is stored; the refusal is answer_stream's to report, with no answer row.
    assert stored.created and context is None
    assert list(conversation.messages.values_list("role", flat=True)) == ["user"]


def test_the_chosen_personality_is_found_without_a_join(shop_bot):
    conversation = conversation_with(shop_bot, [("hello there", None)])
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    services.conversation_set_template(conversation=conversation, template=template_get(slug="casual_chat"))
    with CaptureQueriesContext(connection) as queries:
        context = chat.turn_context(conversation_id=conversation.pk)
    assert context.template.slug == "casual_chat"
    assert not [q for q in queries if "bots_prompttemplate" in q["sql"]]  # neither joined nor read
