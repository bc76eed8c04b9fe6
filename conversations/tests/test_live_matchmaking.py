"""/ws/match/ end to end: real websocket clients against real Daphne processes."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
import websockets

from conversations.matchmaking.webhooks import signature_header

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "live-webhook-secret"


def server_env(**extra):
    return {"MATCH_DB_THREADS": "2", "MATCHMAKING_WEBHOOK_SECRET": SECRET, "LLM_PROVIDERS": "extractive", **extra}


async def join(url, user_id, **extra):
    ws = await websockets.connect(f"{url}/ws/match/")
    await ws.send(json.dumps({"type": "match.join", "user_id": user_id, "profile": {"name": user_id}, **extra}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "match.waiting"
    return ws


async def frame_of(ws, frame_type, timeout=15):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        assert frame["type"] != "error", frame
        if frame["type"] == frame_type:
            return frame


def test_users_match_talk_and_the_webhook_reaches_an_open_socket(live_daphne):
    server = live_daphne(env=server_env(MATCH_FALLBACK_SECONDS="60"))

    async def scenario():
        alice, bob = await join(server.ws_url, "alice"), await join(server.ws_url, "bob")
        found = await frame_of(alice, "match.found")
        assert (await frame_of(bob, "match.found"))["room"] == found["room"]
        await bob.send(json.dumps({"type": "message.send", "text": "hello from Bob"}))
        heard = await frame_of(alice, "message")
        assert (heard["from"], heard["text"]) == ("peer", "hello from Bob") and heard["message_id"]

        # An external matchmaker gives up on Carol: her open socket gets the bot.
        carol = await join(server.ws_url, "carol", pool="elsewhere")
        body = json.dumps(
            {"event_id": "e-1", "type": "chatbot_fallback_triggered", "user_id": "carol", "profile": {"name": "Carol"}}
        ).encode()
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{server.url}/api/v1/webhooks/matchmaking/",
                content=body,
                headers={"Content-Type": "application/json", "Chatbase-Signature": signature_header(body, SECRET)},
            )
        assert response.status_code == 200 and response.json()["socket"] is True
        connected = await frame_of(carol, "bot.connected")
        assert connected["conversation_id"] == response.json()["session_id"]
        assert "Carol" in connected["welcome"]

        await alice.close()
        assert (await frame_of(bob, "session.ended"))["reason"] == "peer_disconnected"
        await bob.close()
        await carol.close()

    asyncio.run(scenario())


@pytest.mark.redis
def test_users_on_two_servers_match_and_a_crashed_server_leaves_no_ghost(live_daphne):
    env = server_env(MATCH_FALLBACK_SECONDS="60", MATCH_HEARTBEAT_SECONDS="0.5", MATCH_TICKET_STALE_SECONDS="2")
    first, second = live_daphne(env=env), live_daphne(env=env)

    async def scenario():
        alice = await join(first.ws_url, "alice")
        bob = await join(second.ws_url, "bob")
        found = await frame_of(alice, "match.found")
        assert found["peer"] == {"name": "bob"}
        assert (await frame_of(bob, "match.found"))["room"] == found["room"]
        await alice.send(json.dumps({"type": "message.send", "text": "across servers"}))
        assert (await frame_of(bob, "message"))["text"] == "across servers"

        # Bob's server dies without closing anything; the live server's sweep notices.
        second.process.send_signal(signal.SIGKILL)
        ended = await frame_of(alice, "session.ended", timeout=15)
        assert ended["reason"] == "peer_disconnected"

        # Alice queues again and is paired with Dave, not with Bob's ghost.
        await alice.send(json.dumps({"type": "match.join", "user_id": "alice", "profile": {"name": "alice"}}))
        dave = await join(first.ws_url, "dave")
        assert (await frame_of(alice, "match.found"))["peer"] == {"name": "dave"}
        await frame_of(dave, "match.found")
        await alice.close()
        await dave.close()

    asyncio.run(scenario())
