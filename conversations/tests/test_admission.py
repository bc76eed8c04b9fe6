"""Preparation slots (conversations/admission.py): how many questions a process
prepares at once, and that a slot is never held while a model thinks or while a
socket's earlier answer streams."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from chatbase.testing.fake_llm import Script
from conversations import admission
from conversations.admission import prepare_slot
from conversations.tests.test_chat_consumer import connect, receive_until


def waiting() -> float:
    return REGISTRY.get_sample_value("chatbase_chat_prepare_waiting") or 0.0


async def test_at_most_the_limit_are_prepared_at_once_in_arrival_order(settings):
    settings.CHAT_PREPARE_CONCURRENCY = 2
    first, second = await prepare_slot(), await prepare_slot()
    waiting_before = waiting()
    third, fourth = asyncio.create_task(prepare_slot()), asyncio.create_task(prepare_slot())
    await asyncio.sleep(0.05)
    assert not third.done() and not fourth.done()
    assert waiting() == waiting_before + 2

    first.release()
    await asyncio.sleep(0.05)
    assert third.done() and not fourth.done()  # the first to wait is the first served
    second.release()
    await asyncio.wait_for(fourth, 1)
    assert waiting() == waiting_before
    for task in (third, fourth):
        task.result().release()


async def test_a_slot_released_twice_frees_one_place(settings):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    slot = await prepare_slot()
    slot.release()
    slot.release()
    assert not slot.held
    again = await prepare_slot()
    blocked = asyncio.create_task(prepare_slot())
    await asyncio.sleep(0.05)
    assert not blocked.done()
    again.release()
    (await asyncio.wait_for(blocked, 1)).release()


async def test_a_waiter_cancelled_takes_no_slot(settings):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    held = await prepare_slot()
    gone = asyncio.create_task(prepare_slot())
    await asyncio.sleep(0.02)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    held.release()
    (await asyncio.wait_for(prepare_slot(), 1)).release()


async def test_a_question_waiting_too_long_goes_ahead_without_a_slot(settings, monkeypatch):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    monkeypatch.setattr(admission, "MAX_WAIT_SECONDS", 0.05)
    overdue = REGISTRY.get_sample_value("chatbase_chat_prepare_overdue_total") or 0.0
    held = await prepare_slot()
    late = await asyncio.wait_for(prepare_slot(), 1)
    assert held.held and not late.held
    late.release()  # nothing to give back
    assert REGISTRY.get_sample_value("chatbase_chat_prepare_overdue_total") == overdue + 1
    held.release()
    (await asyncio.wait_for(prepare_slot(), 1)).release()


async def test_no_limit_when_zero(settings):
    settings.CHAT_PREPARE_CONCURRENCY = 0
    slots = [await asyncio.wait_for(prepare_slot(), 1) for _ in range(50)]
    assert not any(slot.held for slot in slots)


@pytest.mark.django_db(transaction=True)
async def test_a_slot_is_given_back_before_the_model_is_called(shop_bot, llm, settings):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    llm.openai.enqueue(Script(failure="hang", hang_seconds=20), Script(text="Two working days."))
    thinking, _ = await connect(shop_bot, ip="203.0.113.10")
    await thinking.send_json_to({"type": "message.send", "text": "How long do refunds take?"})
    assert (await thinking.receive_json_from(timeout=10))["type"] == "message.ack"
    assert await llm.until(lambda: len(llm.requests_for("openai")) == 1)

    # The only slot is free again although the first model has not answered at all.
    other, _ = await connect(shop_bot, ip="203.0.113.11")
    await other.send_json_to({"type": "message.send", "text": "When do orders ship?"})
    frames = await receive_until(other, "answer.done", timeout=5)
    assert frames[-1]["type"] == "answer.done" and frames[-1]["text"] == "Two working days."
    await other.disconnect()
    await thinking.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_message_waiting_for_its_sockets_answer_holds_no_slot(shop_bot, llm, settings):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    slow = Script(text=" ".join(f"word{i}" for i in range(80)), tokens_per_second=10)  # 8 s of streaming
    llm.openai.enqueue(slow, Script(text="Two working days."), Script(text="And the second answer."))
    busy, _ = await connect(shop_bot, ip="203.0.113.12")
    await busy.send_json_to({"type": "message.send", "text": "Tell me everything."})
    frames = await receive_until(busy, "answer.delta")
    assert frames[-1]["type"] == "answer.delta"
    # Stored and acknowledged, then waiting for the answer streaming on its socket.
    await busy.send_json_to({"type": "message.send", "text": "And then?", "client_id": "second"})
    while (frame := await busy.receive_json_from(timeout=5))["type"] != "message.ack":
        assert frame["type"] == "answer.delta"

    other, _ = await connect(shop_bot, ip="203.0.113.13")
    await other.send_json_to({"type": "message.send", "text": "When do orders ship?"})
    frames = await receive_until(other, "answer.done", timeout=5)
    assert frames[-1]["type"] == "answer.done" and frames[-1]["text"] == "Two working days."

    # The first answer goes on to its end, then the waiting message is answered.
    first = (await receive_until(busy, "answer.done", timeout=15))[-1]
    second = (await receive_until(busy, "answer.done", timeout=15))[-1]
    assert first["text"] == slow.text
    assert second["text"] == "And the second answer."
    await other.disconnect()
    await busy.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_burst_beyond_the_limit_is_answered_in_full(shop_bot, llm, settings):
    settings.CHAT_PREPARE_CONCURRENCY = 1
    llm.openai.enqueue(*(Script(text=f"Answer {i}.") for i in range(6)))
    sockets = [(await connect(shop_bot, ip=f"203.0.113.{20 + i}"))[0] for i in range(6)]
    for i, comm in enumerate(sockets):
        await comm.send_json_to({"type": "message.send", "text": f"Question {i}?"})
    answers = set()
    for comm in sockets:
        frames = await receive_until(comm, "answer.done")
        assert frames[-1]["type"] == "answer.done", frames
        answers.add(frames[-1]["text"])
        await comm.disconnect()
    assert answers == {f"Answer {i}." for i in range(6)}


@pytest.mark.django_db(transaction=True)
async def test_the_wait_for_a_slot_counts_in_the_answers_first_token_time(shop_bot, llm, settings):
    """The stored timings (and the first-token metric) start when the question came."""
    from channels.db import database_sync_to_async

    from conversations.models import Message

    settings.CHAT_PREPARE_CONCURRENCY = 1
    llm.openai.enqueue(Script(text="Two working days."))
    comm, _ = await connect(shop_bot, ip="203.0.113.30")
    taken = await prepare_slot()
    await comm.send_json_to({"type": "message.send", "text": "When do orders ship?"})
    await asyncio.sleep(0.5)  # the question waits for the slot this test holds
    taken.release()
    frames = await receive_until(comm, "answer.done")
    assert frames[-1]["type"] == "answer.done"
    await comm.disconnect()

    answer = await database_sync_to_async(Message.objects.get)(pk=frames[-1]["message_id"])
    assert answer.first_token_ms >= 500 and answer.latency_ms >= 500
