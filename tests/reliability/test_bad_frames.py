"""Oversized and malformed frames against a real Daphne: clear errors, nothing breaks."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from conversations.models import Message
from tests.reliability.conftest import ask, connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_bad_frames_get_error_frames_and_an_oversized_one_closes_only_its_socket(shop_bot, live_daphne, settings):
    server = live_daphne()

    async def scenario():
        ws, _ = await connect(server, shop_bot)
        replies = {}
        for name, frame in [
            ("not json", "{not json"),
            ("not an object", "[1, 2]"),
            ("no type", json.dumps({"text": "hi"})),
            ("unknown type", json.dumps({"type": "admin.delete_everything"})),
            ("missing text", json.dumps({"type": "message.send"})),
            ("text not a string", json.dumps({"type": "message.send", "text": {"$gt": ""}})),
            ("too long", json.dumps({"type": "message.send", "text": "x" * 20_000})),
            ("binary", b"\x00\x01binary"),
        ]:
            await ws.send(frame)
            replies[name] = json.loads(await asyncio.wait_for(ws.recv(), 20))
        # After all that the socket still works.
        answer = await ask(ws, "How long do refunds take?", "good")

        bystander, _ = await connect(server, shop_bot)
        victim, _ = await connect(server, shop_bot)
        await victim.send("x" * (settings.WEBSOCKET_MAX_MESSAGE_BYTES + 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(victim.recv(), 20)
        # Only the sender of the oversized frame is cut off.
        still_fine = await ask(bystander, "How many working days until my order ships?", "bystander")
        for socket in (ws, bystander):
            await socket.close()
        return replies, answer, closed.value, still_fine

    replies, answer, closed, still_fine = asyncio.run(scenario())

    for name, reply in replies.items():
        assert reply["type"] == "error", name
        assert set(reply) >= {"detail", "code"} and reply["detail"], name
    assert replies["too long"]["code"] == "too_long"
    assert {replies[n]["code"] for n in ("not json", "not an object", "no type", "missing text")} == {"invalid"}
    assert answer[-1]["type"] == "answer.done"
    # Daphne (autobahn, failByDrop) drops the TCP connection of a frame over the limit
    # rather than reading it: the client sees an abnormal closure.
    assert isinstance(closed, websockets.ConnectionClosedError)
    assert still_fine[-1]["type"] == "answer.done"
    # Nothing invalid was stored; the valid messages were.
    assert set(Message.objects.filter(role="user").values_list("client_id", flat=True)) == {"good", "bystander"}
