"""/ws/match/ with real concurrent websocket clients (WebsocketCommunicator, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chatbase.asgi import application
from chatbase.testing.fake_llm import Script
from conversations.matchmaking.models import MatchMessage, MatchRoom, MatchTicket
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def fresh_channel_layer():
    """channels_redis binds its locks to the event loop that first used the layer: each
    test (its own loop) gets a new one, whose connections are closed on that loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    for layer in list(channel_layers.backends.values()):
        if hasattr(layer, "close_pools"):
            await layer.close_pools()
    channel_layers.backends.clear()


@pytest.fixture
def no_fallback(settings):
    # Pairing tests must not race the bot.
    settings.MATCH_FALLBACK_SECONDS = 60.0


@pytest.fixture
def fast_fallback(settings):
    settings.MATCH_FALLBACK_SECONDS = 1.0


async def connect():
    comm = WebsocketCommunicator(application, "/ws/match/")
    connected, _ = await comm.connect()
    assert connected
    return comm


async def join(user_id, profile=None, **extra):
    comm = await connect()
    await comm.send_json_to(
        {"type": "match.join", "user_id": user_id, "profile": profile or {"name": user_id.title()}, **extra}
    )
    waiting = await comm.receive_json_from(timeout=10)
    assert waiting["type"] == "match.waiting", waiting
    return comm


async def frame_of(comm, frame_type, timeout=10.0):
    """Frames up to and including the first of `frame_type` (an error stops early)."""
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in (frame_type, "error"):
            assert frame["type"] == frame_type, frames
            return frame, frames


async def paired(*user_ids):
    comms = [await join(user_id) for user_id in user_ids]
    for comm in comms:
        await frame_of(comm, "match.found")
    return comms


async def rows(model, **filters):
    return await database_sync_to_async(lambda: list(model.objects.filter(**filters)))()


async def test_two_users_match_and_talk(no_fallback):
    alice = await join("alice", {"name": "Alice", "age": 27})
    bob = await join("bob", {"name": "Bob"})
    found_a, _ = await frame_of(alice, "match.found")
    found_b, _ = await frame_of(bob, "match.found")
    assert found_a["room"] == found_b["room"]
    assert found_a["peer"] == {"name": "Bob"} and found_b["peer"] == {"name": "Alice"}

    await alice.send_json_to({"type": "message.send", "text": "hi Bob!", "client_id": "a1"})
    ack = await alice.receive_json_from(timeout=5)
    assert ack["type"] == "message.ack" and ack["client_id"] == "a1"
    heard = await bob.receive_json_from(timeout=5)
    assert heard == {"type": "message", "from": "peer", "text": "hi Bob!", "message_id": ack["message_id"]}
    await bob.send_json_to({"type": "message.send", "text": "hey Alice"})
    assert (await bob.receive_json_from(timeout=5))["type"] == "message.ack"
    assert (await alice.receive_json_from(timeout=5))["text"] == "hey Alice"
    # A sender does not get its own message back.
    assert await alice.receive_nothing(timeout=0.2)
    # Both were stored (for moderation), in order, before they were relayed.
    stored = await rows(MatchMessage, room_id=found_a["room"])
    assert [(m.user_id, m.text) for m in stored] == [("alice", "hi Bob!"), ("bob", "hey Alice")]
    assert stored[0].pk == ack["message_id"] and stored[0].client_id == "a1"

    room = (await rows(MatchRoom))[0]
    assert {room.user_a, room.user_b} == {"alice", "bob"} and str(room.pk) == found_a["room"]
    tickets = await rows(MatchTicket)
    assert {t.room_id for t in tickets} == {room.pk}
    await alice.disconnect()
    await bob.disconnect()


async def test_leaving_ends_the_room_for_both(no_fallback):
    alice, bob = await paired("alice", "bob")
    await alice.send_json_to({"type": "match.leave"})
    assert (await frame_of(alice, "session.ended"))[0]["reason"] == "left"
    ended, _ = await frame_of(bob, "session.ended")
    assert ended["reason"] == "peer_left"
    # Bob's socket is idle again: no ticket left, and he may queue again.
    assert await rows(MatchTicket) == []
    room = (await rows(MatchRoom))[0]
    assert room.ended_at is not None and room.end_reason == "left"
    await bob.send_json_to({"type": "message.send", "text": "still there?"})
    error = await bob.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "invalid"
    await alice.disconnect()
    await bob.disconnect()


async def test_disconnecting_ends_the_room_for_the_peer(no_fallback):
    alice, bob = await paired("alice", "bob")
    await bob.disconnect()
    ended, _ = await frame_of(alice, "session.ended")
    assert ended["reason"] == "peer_disconnected"
    assert await rows(MatchTicket) == []
    await alice.disconnect()


async def test_a_lonely_user_gets_the_bot_on_time_and_it_answers(fast_fallback, fake_llm):
    fake_llm.openai.enqueue(Script(text="Hi Priya! Which band are you into lately?"))
    started = time.monotonic()
    comm = await join("priya", {"name": "Priya", "age": 24, "interests": ["music", "hiking"]})
    connected, _ = await frame_of(comm, "bot.connected", timeout=5)
    elapsed = time.monotonic() - started
    assert abs(elapsed - 1.0) <= 0.5, elapsed
    assert connected["template"] == "casual_chat"  # a social default: no rule matched
    assert "Priya" in connected["welcome"]
    conversation = (await rows(Conversation, pk=connected["conversation_id"]))[0]
    assert conversation.channel == "matchmaking" and conversation.visitor_id == "user:priya"
    assert conversation.profile["interests"] == ["music", "hiking"]

    await comm.send_json_to({"type": "message.send", "text": "hello, anyone?", "client_id": "m1"})
    ack, _ = await frame_of(comm, "message.ack")
    done, frames = await frame_of(comm, "answer.done")
    deltas = [f["delta"] for f in frames if f["type"] == "answer.delta"]
    assert "".join(deltas) == done["text"] == "Hi Priya! Which band are you into lately?"
    message = await comm.receive_json_from(timeout=5)
    assert message == {"type": "message", "from": "bot", "text": done["text"], "message_id": done["message_id"]}
    # The personality was filled in with the profile.
    system = fake_llm.requests_for("openai")[-1].body["messages"][0]["content"]
    assert "chatting casually with Priya" in system and "music, hiking" in system
    stored = await rows(Message, conversation_id=connected["conversation_id"])
    assert [(m.role, m.pk) for m in stored] == [("user", ack["message_id"]), ("assistant", done["message_id"])]
    # Still in the queue while talking to the bot.
    assert [t.bot_conversation_id for t in await rows(MatchTicket, user_id="priya")] == [conversation.pk]
    await comm.disconnect()
    conversation = (await rows(Conversation, pk=conversation.pk))[0]
    assert conversation.status == "ended" and conversation.end_reason == "disconnected"


async def test_the_template_follows_the_profile(fast_fallback, fake_llm):
    comm = await join("sam", {"name": "Sam", "age": 30, "interests": ["dating", "cooking"]})
    connected, _ = await frame_of(comm, "bot.connected", timeout=5)
    assert connected["template"] == "dating_advice"
    await comm.disconnect()


async def test_a_human_takes_over_from_the_bot(settings, fake_llm):
    settings.MATCH_FALLBACK_SECONDS = 0.3
    # A slow answer: the handover happens mid-answer and stops it.
    fake_llm.openai.enqueue(Script(text="one two three four five six seven eight nine ten", tokens_per_second=5))
    alice = await join("alice", {"name": "Alice"})
    connected, _ = await frame_of(alice, "bot.connected", timeout=5)
    await alice.send_json_to({"type": "message.send", "text": "tell me something"})
    await frame_of(alice, "answer.delta")
    bob = await join("bob", {"name": "Bob"})
    ended, _ = await frame_of(alice, "session.ended")
    assert ended == {"type": "session.ended", "reason": "handed_over", "conversation_id": connected["conversation_id"]}
    found, _ = await frame_of(alice, "match.found")
    assert found["peer"] == {"name": "Bob"}
    assert (await frame_of(bob, "match.found"))[0]["room"] == found["room"]
    conversation = (await rows(Conversation, pk=connected["conversation_id"]))[0]
    assert conversation.status == "ended" and conversation.end_reason == "handed_over"
    # What the bot had said before the human came is kept, marked incomplete.
    answers = await rows(Message, conversation_id=conversation.pk, role="assistant")
    assert len(answers) == 1 and answers[0].incomplete and answers[0].text
    # The two humans now talk to each other.
    await bob.send_json_to({"type": "message.send", "text": "hi, I'm Bob"})
    heard = (await frame_of(alice, "message"))[0]
    assert (heard["from"], heard["text"]) == ("peer", "hi, I'm Bob")
    await alice.disconnect()
    await bob.disconnect()


async def test_twenty_one_users_at_once_end_in_consistent_pairs_or_a_bot(settings, fake_llm):
    settings.MATCH_FALLBACK_SECONDS = 2.0
    comms = [await connect() for _ in range(21)]
    await asyncio.gather(
        *(
            comm.send_json_to({"type": "match.join", "user_id": f"u{i}", "profile": {"name": f"U{i}"}})
            for i, comm in enumerate(comms)
        )
    )

    async def outcome(comm):
        frame, frames = None, []
        while frame is None or frame["type"] not in ("match.found", "bot.connected"):
            frame = await comm.receive_json_from(timeout=10)
            frames.append(frame)
        # Nothing else follows: nobody is paired a second time.
        assert await comm.receive_nothing(timeout=0.3 if frame["type"] == "match.found" else 0.1)
        return frames

    results = await asyncio.gather(*(outcome(c) for c in comms))
    rooms: dict[str, list[int]] = {}
    bots = []
    for i, frames in enumerate(results):
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "match.waiting" and kinds.count("match.found") + kinds.count("bot.connected") == 1
        if kinds[-1] == "match.found":
            rooms.setdefault(frames[-1]["room"], []).append(i)
            assert frames[-1]["peer"]["name"] != f"U{i}"
        else:
            bots.append(i)
    assert len(rooms) == 10 and all(len(set(members)) == 2 for members in rooms.values())
    assert len(bots) == 1
    everyone = [i for members in rooms.values() for i in members] + bots
    assert sorted(everyone) == list(range(21))
    db_rooms = await rows(MatchRoom)
    assert {str(r.pk) for r in db_rooms} == set(rooms)
    users = Counter(u for r in db_rooms for u in (r.user_a, r.user_b))
    assert len(users) == 20 and set(users.values()) == {1}
    for comm in comms:
        await comm.disconnect()


async def test_users_are_paired_only_within_their_pool(no_fallback):
    alice = await join("alice", pool="en")
    bob = await join("bob", pool="fr")
    assert await alice.receive_nothing(timeout=0.3) and await bob.receive_nothing(timeout=0.1)
    claire = await join("claire", pool="fr")
    assert (await frame_of(bob, "match.found"))[0]["peer"] == {"name": "Claire"}
    await frame_of(claire, "match.found")
    assert await alice.receive_nothing(timeout=0.2)
    for comm in (alice, bob, claire):
        await comm.disconnect()


async def test_joining_again_as_the_same_user_replaces_the_old_socket(no_fallback):
    first = await join("alice")
    second = await join("alice")
    ended, _ = await frame_of(first, "session.ended")
    assert ended["reason"] == "replaced"
    assert (await first.receive_output(timeout=5))["type"] == "websocket.close"
    tickets = await rows(MatchTicket)
    assert len(tickets) == 1 and tickets[0].user_id == "alice"
    bob = await join("bob")
    await frame_of(second, "match.found")
    await frame_of(bob, "match.found")
    await second.disconnect()
    await bob.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "message.send", "text": "hi"}, "invalid"),
        ({"type": "match.leave"}, "invalid"),
        ({"type": "match.join"}, "invalid"),
        ({"type": "match.join", "user_id": "x" * 201}, "invalid"),
        ({"type": "match.join", "user_id": "a", "profile": "not an object"}, "invalid"),
        ({"type": "match.join", "user_id": "a", "pool": "no spaces"}, "invalid"),
        ({"type": "match.dance"}, "invalid"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays(frame, code):
    comm = await connect()
    await comm.send_json_to(frame)
    error = await comm.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    await comm.send_json_to({"type": "match.join", "user_id": "ok", "profile": {}})
    assert (await comm.receive_json_from(timeout=5))["type"] == "match.waiting"
    await comm.disconnect()


async def test_waiting_without_a_bot_yet_cannot_send(no_fallback):
    comm = await join("alice")
    await comm.send_json_to({"type": "message.send", "text": "hello?"})
    error = await comm.receive_json_from(timeout=5)
    assert error["type"] == "error" and "waiting" in error["detail"]
    await comm.send_json_to({"type": "match.join", "user_id": "alice"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "error"
    await comm.send_json_to({"type": "match.leave"})
    assert (await comm.receive_json_from(timeout=5)) == {"type": "session.ended", "reason": "left"}
    assert await rows(MatchTicket) == []
    await comm.disconnect()


async def test_identity_hash_is_required_when_configured(settings, no_fallback):
    from conversations.matchmaking.services import user_hash

    settings.MATCHMAKING_IDENTITY_SECRET = "app-secret"
    comm = await connect()
    await comm.send_json_to({"type": "match.join", "user_id": "alice", "user_hash": "0" * 64})
    assert (await comm.receive_json_from(timeout=5))["type"] == "error"
    await comm.send_json_to({"type": "match.join", "user_id": "alice", "user_hash": user_hash("alice")})
    assert (await comm.receive_json_from(timeout=5))["type"] == "match.waiting"
    await comm.disconnect()


async def test_messages_are_rate_limited_per_user(settings, no_fallback):
    settings.MATCH_RATE_PER_USER = "3/hour"  # not per minute: a fixed minute window could end between the hits
    alice, bob = await paired("alice", "bob")
    for i in range(3):
        await alice.send_json_to({"type": "message.send", "text": f"m{i}"})
    await alice.send_json_to({"type": "message.send", "text": "one too many"})
    frames = [await alice.receive_json_from(timeout=5) for _ in range(4)]
    assert [f["type"] for f in frames] == ["message.ack"] * 3 + ["error"]
    assert frames[-1]["code"] == "rate_limited"
    texts = [(await bob.receive_json_from(timeout=5))["text"] for _ in range(3)]
    assert texts == ["m0", "m1", "m2"] and await bob.receive_nothing(timeout=0.2)
    await alice.disconnect()
    await bob.disconnect()


async def test_the_app_ending_the_bot_session_tells_the_socket_which_keeps_waiting(fast_fallback, fake_llm, settings):
    from conversations.matchmaking import services as match_services

    alice = await join("alice")
    connected, _ = await frame_of(alice, "bot.connected")
    conversation = (await rows(Conversation, pk=connected["conversation_id"]))[0]
    # What POST /api/v1/sessions/{id}/end/ does.
    await database_sync_to_async(match_services.session_end)(conversation=conversation, reason="ended_by_app")
    ended, _ = await frame_of(alice, "session.ended")
    assert ended == {"type": "session.ended", "reason": "ended_by_app", "conversation_id": conversation.pk}
    await alice.send_json_to({"type": "message.send", "text": "still there?"})
    assert "keep waiting" in (await frame_of(alice, "error"))[0]["detail"]  # no bot now...
    ticket = (await rows(MatchTicket, user_id="alice"))[0]
    assert ticket.room_id is None and ticket.bot_conversation_id is None
    bob = await join("bob")  # ...but still in the queue for a human
    assert (await frame_of(alice, "match.found"))[0]["peer"] == {"name": "Bob"}
    await alice.disconnect()
    await bob.disconnect()


async def test_a_pairing_that_failed_is_retried_by_the_heartbeat(no_fallback, settings, monkeypatch):
    from django.db import OperationalError

    from conversations.matchmaking import queue

    settings.MATCH_HEARTBEAT_SECONDS = 0.3
    real = queue.pairs_make
    failures = [OperationalError("the database went away")]

    def flaky(**kwargs):
        if failures:
            raise failures.pop()
        return real(**kwargs)

    monkeypatch.setattr(queue, "pairs_make", flaky)
    alice = await join("alice")
    bob = await join("bob")  # its pairing fails; no third user comes to retry it
    found, _ = await frame_of(alice, "match.found")
    assert found["peer"] == {"name": "Bob"} and not failures
    assert (await frame_of(bob, "match.found"))[0]["room"] == found["room"]
    await alice.disconnect()
    await bob.disconnect()


async def test_a_room_message_resent_with_its_client_id_is_stored_once(no_fallback):
    alice, bob = await paired("alice", "bob")
    for _ in range(2):  # the second as after a reconnect, when the ack never came
        await alice.send_json_to({"type": "message.send", "text": "are you there?", "client_id": "c-1"})
        ack = await alice.receive_json_from(timeout=5)
        heard = await bob.receive_json_from(timeout=5)
        assert ack["type"] == "message.ack" and heard["message_id"] == ack["message_id"]
    stored = await rows(MatchMessage, user_id="alice")
    assert [(m.text, m.client_id) for m in stored] == [("are you there?", "c-1")]
    await alice.disconnect()
    await bob.disconnect()


async def test_a_room_nobody_could_be_told_of_is_undone_and_the_pair_made_again(no_fallback, settings, monkeypatch):
    from conversations.matchmaking import queue

    settings.MATCH_HEARTBEAT_SECONDS = 0.3
    real = queue.pairing_announce
    failures = [ConnectionError("the channel layer went away")]

    async def flaky(pairing):
        if failures:
            raise failures.pop()
        await real(pairing)

    monkeypatch.setattr(queue, "pairing_announce", flaky)
    alice = await join("alice")
    bob = await join("bob")
    found, _ = await frame_of(alice, "match.found")
    assert (await frame_of(bob, "match.found"))[0]["room"] == found["room"]
    rooms = await rows(MatchRoom)
    assert len(rooms) == 2  # the first, never announced, was closed
    (first,) = [room for room in rooms if str(room.pk) != found["room"]]
    assert first.end_reason == "not_announced" and first.ended_at is not None
    await alice.disconnect()
    await bob.disconnect()
