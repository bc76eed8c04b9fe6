"""The visitor chat socket, per docs/protocol.md, with WebsocketCommunicator."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from bots.models import Bot
from chatbase.asgi import application
from chatbase.testing.fake_llm import Script
from conversations.identity import visitor_token_issue
from conversations.models import Conversation, Message
from conversations.tests.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(bot, *, origin=ORIGIN, visitor=None, ip="203.0.113.9"):
    path = f"/ws/chat/{bot.public_key}/" + (f"?visitor={visitor}" if visitor else "")
    headers = [(b"origin", origin.encode())] if origin is not None else []
    comm = WebsocketCommunicator(application, path, headers=headers)
    comm.scope["client"] = (ip, 50000)
    return comm


async def connect(bot, **kwargs):
    comm = communicator(bot, **kwargs)
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=10)
    assert ready["type"] == "session.ready"
    return comm, ready


async def receive_until(comm, frame_type, timeout=15):
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in (frame_type, "error"):
            return frames


async def test_session_ready_then_a_streamed_grounded_answer(shop_bot):
    comm, ready = await connect(shop_bot)
    assert ready["welcome"] == "Hello!" and ready["suggestions"] == ["Refunds?"]
    assert ready["history"] == [] and ready["visitor_token"]
    await comm.send_json_to({"type": "message.send", "text": "How long do refunds take?", "client_id": "c1"})
    ack = await comm.receive_json_from(timeout=10)
    assert ack["type"] == "message.ack" and ack["client_id"] == "c1"
    frames = await receive_until(comm, "answer.done")
    deltas = [f for f in frames if f["type"] == "answer.delta"]
    done = frames[-1]
    assert done["type"] == "answer.done", frames
    assert deltas and {d["message_id"] for d in deltas} == {done["message_id"]}
    assert "".join(d["delta"] for d in deltas) == done["text"]
    # Nothing configured: the offline answerer quotes the documents, with sources.
    assert done["provider"] == "extractive"
    assert "14 days" in done["text"]
    assert done["sources"][0]["document_title"] == "Returns policy"
    assert set(done["sources"][0]) >= {"document_title", "url", "snippet"}
    await comm.disconnect()

    user = await database_sync_to_async(Message.objects.get)(pk=ack["message_id"])
    answer = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert user.role == "user" and user.text == "How long do refunds take?"
    assert answer.providers == ["extractive"] and not answer.incomplete
    assert answer.latency_ms is not None and answer.first_token_ms is not None


async def test_the_user_message_is_stored_before_the_model_is_called(shop_bot, llm):
    llm.openai.enqueue(Script(failure="hang", hang_seconds=5))
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Anyone there?"})
    ack = await comm.receive_json_from(timeout=10)
    # The model has not answered (it hangs) but the message is already committed.
    assert await database_sync_to_async(Message.objects.filter(pk=ack["message_id"], text="Anyone there?").exists)()
    await comm.disconnect()


async def test_reconnecting_with_the_token_restores_the_history(shop_bot):
    comm, ready = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Do you ship express?"})
    await receive_until(comm, "answer.done")
    await comm.disconnect()

    again, ready_again = await connect(shop_bot, visitor=ready["visitor_token"])
    assert ready_again["conversation_id"] == ready["conversation_id"]
    assert [m["role"] for m in ready_again["history"]] == ["user", "assistant"]
    assert ready_again["history"][0]["text"] == "Do you ship express?"
    await again.disconnect()

    # Another bot's token (or a forged one) starts a new visitor.
    other = await database_sync_to_async(Bot.objects.create)(
        owner_id=shop_bot.owner_id, name="Other", allowed_origins=[ORIGIN]
    )
    _, foreign = await database_sync_to_async(visitor_token_issue)(bot=other)
    fresh, ready_fresh = await connect(shop_bot, visitor=foreign)
    assert ready_fresh["conversation_id"] != ready["conversation_id"] and ready_fresh["history"] == []
    await fresh.disconnect()


async def test_a_resent_client_id_is_stored_and_answered_once(shop_bot):
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Refund time?", "client_id": "same"})
    first_ack = await comm.receive_json_from(timeout=10)
    await receive_until(comm, "answer.done")
    await comm.send_json_to({"type": "message.send", "text": "Refund time?", "client_id": "same"})
    second_ack = await comm.receive_json_from(timeout=10)
    assert second_ack["message_id"] == first_ack["message_id"]
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()
    count = await database_sync_to_async(Message.objects.filter(role="user").count)()
    assert count == 1


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("https://evil.example.com", "not allowed"),
        (None, "missing"),
        ("https://shop.example.com:8443", "other port"),
        ("http://shop.example.com", "other scheme"),
        ("null", "opaque"),
    ],
)
async def test_handshake_is_refused_for_origins_not_on_the_list(shop_bot, origin, reason):
    comm = communicator(shop_bot, origin=origin)
    connected, code = await comm.connect()
    assert not connected, reason
    assert code == 4403


async def test_handshake_is_refused_for_unknown_and_inactive_bots(shop_bot):
    shop_bot.status = Bot.Status.INACTIVE
    await database_sync_to_async(shop_bot.save)()
    connected, code = await communicator(shop_bot).connect()
    assert not connected and code == 4404
    connected, code = await WebsocketCommunicator(
        application, "/ws/chat/pk_nope/", headers=[(b"origin", ORIGIN.encode())]
    ).connect()
    assert not connected and code == 4404


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(shop_bot, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    comm, _ = await connect(shop_bot)
    await comm.send_to(text_data="not json")
    assert (await comm.receive_json_from())["code"] == "invalid"
    await comm.send_json_to({"type": "message.delete"})
    assert (await comm.receive_json_from())["code"] == "invalid"
    await comm.send_json_to({"type": "message.send", "text": "x" * 51})
    too_long = await comm.receive_json_from()
    assert too_long["type"] == "error" and too_long["code"] == "too_long"
    await comm.send_json_to({"type": "message.send", "text": "   "})
    assert (await comm.receive_json_from())["code"] == "invalid"
    await comm.send_json_to({"type": "message.send", "text": 42})
    assert (await comm.receive_json_from())["code"] == "invalid"
    await comm.send_to(text_data='{"type": "message.send", "text": "' + "y" * (1024 * 1024) + '"}')
    assert (await comm.receive_json_from())["code"] == "too_long"
    # Still usable.
    await comm.send_json_to({"type": "message.send", "text": "Refunds?"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    await receive_until(comm, "answer.done")
    await comm.disconnect()
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1


async def test_visitors_are_rate_limited_with_retry_after(shop_bot, settings):
    settings.CHAT_RATE_PER_VISITOR = "2/hour"  # not per minute: a fixed minute window could end between the hits
    comm, _ = await connect(shop_bot)
    for text in ("one", "two"):
        await comm.send_json_to({"type": "message.send", "text": f"refund {text}"})
        assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
        await receive_until(comm, "answer.done")
    await comm.send_json_to({"type": "message.send", "text": "three"})
    error = await comm.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == "rate_limited" and error["retry_after"] >= 1
    await comm.disconnect()
    # The refused message was not stored.
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 2


async def test_one_ip_is_limited_across_visitors(shop_bot, settings):
    settings.CHAT_RATE_PER_IP = "1/hour"  # not per minute: a fixed minute window could end between the hits
    first, _ = await connect(shop_bot, ip="198.51.100.7")
    await first.send_json_to({"type": "message.send", "text": "refunds"})
    assert (await first.receive_json_from(timeout=10))["type"] == "message.ack"
    await receive_until(first, "answer.done")
    second, _ = await connect(shop_bot, ip="198.51.100.7")
    await second.send_json_to({"type": "message.send", "text": "refunds"})
    assert (await second.receive_json_from(timeout=10))["code"] == "rate_limited"
    await first.disconnect()
    await second.disconnect()


async def test_disconnecting_mid_answer_cancels_upstream_and_keeps_the_partial_answer(shop_bot, llm):
    llm.openai.enqueue(Script(text=" ".join(f"w{i}" for i in range(200)), tokens_per_second=20))
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Tell me everything about refunds"})
    await comm.receive_json_from(timeout=10)  # ack
    for _ in range(3):
        assert (await comm.receive_json_from(timeout=10))["type"] == "answer.delta"
    await comm.disconnect()
    (upstream,) = llm.requests_for("openai")
    assert await llm.until(lambda: upstream.client_disconnected, timeout=5)

    async def stored():
        return await database_sync_to_async(list)(Message.objects.filter(role="assistant"))

    for _ in range(50):
        answers = await stored()
        if answers and answers[0].text:
            break
        await asyncio.sleep(0.1)
    (answer,) = answers
    assert answer.incomplete
    assert answer.text.startswith("w0 w1 w2")
    assert len(answer.text.split()) < 200


async def test_a_provider_failing_before_its_first_token_is_invisible(shop_bot, llm):
    llm.openai.enqueue(Script(failure="server_error"))
    llm.anthropic.enqueue(Script(text="Refunds take fourteen days [1]."))
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "How long do refunds take?"})
    frames = await receive_until(comm, "answer.done")
    assert not [f for f in frames if f["type"] == "error"]
    done = frames[-1]
    assert done["text"] == "Refunds take fourteen days [1]." and done["provider"] == "anthropic"
    assert [s["document_title"] for s in done["sources"]] == ["Returns policy"]
    await comm.disconnect()
    answer = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert answer.providers == ["anthropic"] and answer.output_tokens > 0


async def test_every_provider_down_gives_an_unavailable_error_and_keeps_the_question(shop_bot, llm, settings):
    settings.LLM_PROVIDERS = ["openai", "anthropic"]  # no offline answerer to fall back on
    llm.openai.enqueue(Script(failure="server_error"))
    llm.anthropic.enqueue(Script(failure="overloaded"))
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Refunds?"})
    await comm.receive_json_from(timeout=10)  # ack
    frames = await receive_until(comm, "answer.done")
    assert frames[-1] == {"type": "error", "code": "unavailable", "detail": frames[-1]["detail"]}
    await comm.disconnect()
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1
    assert not await database_sync_to_async(Message.objects.filter(role="assistant").exists)()


async def test_a_conversation_ended_while_connected_continues_in_a_new_one(shop_bot):
    comm, ready = await connect(shop_bot)
    await database_sync_to_async(Conversation.objects.filter(pk=ready["conversation_id"]).update)(status="ended")
    await comm.send_json_to({"type": "message.send", "text": "Refunds?"})
    ack = await comm.receive_json_from(timeout=10)
    message = await database_sync_to_async(Message.objects.select_related("conversation").get)(pk=ack["message_id"])
    assert message.conversation_id != ready["conversation_id"]
    await receive_until(comm, "answer.done")
    await comm.disconnect()


async def test_the_conversation_keeps_only_the_visitors_anonymised_network(shop_bot):
    comm, ready = await connect(shop_bot, ip="203.0.113.9")
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ready["conversation_id"])
    # What a lead found later in the visitor's messages is located from (never the full address).
    assert conversation.metadata == {"origin": ORIGIN, "ip_anonymised": "203.0.113.0"}
    await comm.disconnect()


async def test_without_a_broker_the_summary_waits_until_answer_done_is_sent(shop_bot, llm, settings):
    # Eager, it was a model call between the answer's last token and answer.done.
    from conversations import services

    settings.CHAT_HISTORY_MESSAGES = 2
    visitor, token = await database_sync_to_async(visitor_token_issue)(bot=shop_bot, visitor_id=None)

    def long_conversation():
        conversation = services.conversation_start(bot=shop_bot, visitor_id=visitor, channel="widget")
        for i in range(6):
            services.message_user_add(conversation=conversation, text=f"question {i}")
            answer = services.message_assistant_begin(conversation=conversation)
            services.message_assistant_finish(message=answer, text=f"answer {i}", sources=[], providers=["openai"])
        return conversation

    conversation = await database_sync_to_async(long_conversation)()
    llm.openai.enqueue(Script(text="Refunds take 14 days."))
    # The summary's call hangs: answer.done can only arrive if it is not waited for.
    llm.openai.enqueue(Script(failure="hang", hang_seconds=3))
    comm, ready = await connect(shop_bot, visitor=token)
    assert ready["conversation_id"] == conversation.pk
    await comm.send_json_to({"type": "message.send", "text": "How long do refunds take?"})
    frames = await receive_until(comm, "answer.done", timeout=2)
    assert frames[-1]["type"] == "answer.done" and frames[-1]["text"] == "Refunds take 14 days."
    assert await llm.until(lambda: len(llm.requests_for("openai")) == 2, timeout=5)  # then it ran
    await comm.disconnect()


async def test_a_message_sent_mid_answer_is_answered_next_with_that_answer_in_its_history(shop_bot, llm):
    # The second message arrives while the first answer streams: its turn is read once
    # that answer is stored (not with the message, as an idle socket's is).
    llm.openai.enqueue(
        Script(text="Refunds take fourteen days after we receive the item.", tokens_per_second=20),
        Script(text="Exchanges work the same way."),
    )
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "How do refunds work?"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "message.ack"
    assert (await comm.receive_json_from(timeout=10))["type"] == "answer.delta"
    await comm.send_json_to({"type": "message.send", "text": "And exchanges?"})
    first = await receive_until(comm, "answer.done")
    assert first[-1]["type"] == "answer.done", first
    assert "message.ack" in [f["type"] for f in first]
    second = await receive_until(comm, "answer.done")
    assert second[-1]["type"] == "answer.done" and second[-1]["text"] == "Exchanges work the same way."
    await comm.disconnect()

    _, later = llm.requests_for("openai")
    history = [(m["role"], m["content"]) for m in later.body["messages"] if m["role"] != "system"]
    assert history[-3:] == [
        ("user", "How do refunds work?"),
        ("assistant", "Refunds take fourteen days after we receive the item."),
        ("user", "And exchanges?"),
    ]


async def test_a_message_whose_ack_cannot_be_sent_leaves_no_empty_answer_row(shop_bot, monkeypatch):
    # Stored with its answer's row in one call; the socket breaks before the answer
    # starts: the question stays, the row that would have held the answer goes.
    from conversations.consumers import ChatConsumer

    real_send = ChatConsumer.send_json

    async def broken_ack(self, content, close=False):
        if content.get("type") == "message.ack":
            raise RuntimeError("the socket broke before the ack")
        await real_send(self, content, close)

    monkeypatch.setattr(ChatConsumer, "send_json", broken_ack)
    comm, _ = await connect(shop_bot)
    await comm.send_json_to({"type": "message.send", "text": "Refund time?"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "error"
    await comm.disconnect()
    roles = await database_sync_to_async(lambda: list(Message.objects.values_list("role", flat=True)))()
    assert roles == ["user"]
