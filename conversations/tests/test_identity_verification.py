"""Identity verification of a site's signed-in users on the chat socket, and the
admin preview's token standing in for an allowed origin."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from bots.preview import preview_token_issue
from bots.services.bots import bot_update
from chatbase.asgi import application
from conversations.identity import IdentityRejected, identity_hash_compute, identity_verify
from conversations.models import Conversation
from conversations.tests.conftest import ORIGIN
from conversations.tests.test_chat_consumer import receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def signed(bot, user_id="alice@example.com", ts=None, secret=None):
    ts = int(time.time()) if ts is None else ts
    digest = identity_hash_compute(secret=secret or bot.identity_secret, user_id=user_id, ts=ts)
    return {"user_id": user_id, "user_hash": digest, "ts": str(ts)}


def socket(bot, *, query: dict | None = None, origin=ORIGIN, host="chat.example.com"):
    from urllib.parse import urlencode

    path = f"/ws/chat/{bot.public_key}/" + (f"?{urlencode(query)}" if query else "")
    headers = [(b"origin", origin.encode()), (b"host", host.encode())]
    comm = WebsocketCommunicator(application, path, headers=headers)
    comm.scope["client"] = ("203.0.113.20", 50000)
    return comm


async def test_the_hash_is_hmac_sha256_of_user_id_and_timestamp(shop_bot):
    import hashlib
    import hmac

    expected = hmac.new(shop_bot.identity_secret.encode(), b"42:1700000000", hashlib.sha256).hexdigest()
    assert identity_hash_compute(secret=shop_bot.identity_secret, user_id="42", ts=1700000000) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_hash": "0" * 64}, "does not match"),
        ({"user_id": "mallory@example.com"}, "does not match"),
        ({"ts": "abc"}, "whole Unix seconds"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 151}, "user_id"),
    ],
)
async def test_verify_refuses_tampered_values(shop_bot, change, message):
    values = signed(shop_bot) | change
    with pytest.raises(IdentityRejected, match=message):
        identity_verify(bot=shop_bot, **values)


async def test_verify_refuses_stale_and_future_hashes(shop_bot, settings):
    settings.WIDGET_IDENTITY_MAX_AGE_SECONDS = 3600
    settings.WIDGET_IDENTITY_CLOCK_SKEW_SECONDS = 60
    now = time.time()
    assert identity_verify(bot=shop_bot, **signed(shop_bot, ts=int(now) - 3500)) == "user:alice@example.com"
    with pytest.raises(IdentityRejected, match="expired"):
        identity_verify(bot=shop_bot, **signed(shop_bot, ts=int(now) - 3700))
    assert identity_verify(bot=shop_bot, **signed(shop_bot, ts=int(now) + 30))
    with pytest.raises(IdentityRejected, match="future"):
        identity_verify(bot=shop_bot, **signed(shop_bot, ts=int(now) + 120))
    # Another bot's secret proves nothing here.
    with pytest.raises(IdentityRejected):
        identity_verify(bot=shop_bot, **signed(shop_bot, secret="sk_other"))


async def refused_with(comm):
    connected, _ = await comm.connect()
    assert connected  # accepted only to say why
    frame = await comm.receive_json_from(timeout=10)
    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    return frame


async def test_a_wrong_or_stale_hash_gets_an_error_frame_then_a_close(shop_bot):
    frame = await refused_with(socket(shop_bot, query=signed(shop_bot) | {"user_hash": "f" * 64}))
    assert frame["type"] == "error" and frame["code"] == "not_authenticated"
    assert "does not match" in frame["detail"]
    stale = signed(shop_bot, ts=int(time.time()) - 2 * 86400)
    frame = await refused_with(socket(shop_bot, query=stale))
    assert frame["code"] == "not_authenticated" and "expired" in frame["detail"]
    assert await database_sync_to_async(Conversation.objects.count)() == 0


async def test_a_bot_requiring_identity_refuses_anonymous_visitors(shop_bot):
    await database_sync_to_async(bot_update)(bot=shop_bot, configuration={"identity_verification": True})
    frame = await refused_with(socket(shop_bot))
    assert frame["code"] == "not_authenticated" and "signed-in users only" in frame["detail"]
    comm = socket(shop_bot, query=signed(shop_bot))
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=10)
    assert ready["type"] == "session.ready" and ready["identity"] == {"user_id": "alice@example.com"}
    await comm.disconnect()


async def test_a_verified_users_history_follows_them_across_devices(shop_bot):
    laptop = socket(shop_bot, query=signed(shop_bot))
    await laptop.connect()
    ready = await laptop.receive_json_from(timeout=10)
    assert ready["history"] == [] and ready["identity"] == {"user_id": "alice@example.com"}
    await laptop.send_json_to({"type": "message.send", "text": "How long do refunds take?", "client_id": "l1"})
    await receive_until(laptop, "answer.done")
    await laptop.disconnect()

    # Another device: no visitor token, a fresh hash (another timestamp) for the same user.
    phone = socket(shop_bot, query=signed(shop_bot, ts=int(time.time()) - 5))
    await phone.connect()
    ready_phone = await phone.receive_json_from(timeout=10)
    assert ready_phone["history"][0]["text"] == "How long do refunds take?"
    assert [m["role"] for m in ready_phone["history"]] == ["user", "assistant"]
    assert ready_phone["history"][1]["sources"][0]["document_title"] == "Returns policy"
    await phone.disconnect()

    # Earlier conversations count too, not only the open one.
    conversation = await database_sync_to_async(Conversation.objects.get)(visitor_id="user:alice@example.com")
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(status="ended")
    again = socket(shop_bot, query=signed(shop_bot))
    await again.connect()
    ready_again = await again.receive_json_from(timeout=10)
    assert ready_again["conversation_id"] != conversation.pk
    assert ready_again["history"][0]["text"] == "How long do refunds take?"
    await again.disconnect()

    # Someone else (or nobody) sees none of it.
    bob = socket(shop_bot, query=signed(shop_bot, user_id="bob"))
    await bob.connect()
    assert (await bob.receive_json_from(timeout=10))["history"] == []
    await bob.disconnect()


async def test_a_verified_users_visitor_token_is_no_proof_on_its_own(shop_bot):
    comm = socket(shop_bot, query=signed(shop_bot))
    await comm.connect()
    ready = await comm.receive_json_from(timeout=10)
    await comm.send_json_to({"type": "message.send", "text": "My order number is 1234", "client_id": "a"})
    await receive_until(comm, "answer.done")
    await comm.disconnect()

    anonymous = socket(shop_bot, query={"visitor": ready["visitor_token"]})
    await anonymous.connect()
    ready_anonymous = await anonymous.receive_json_from(timeout=10)
    assert ready_anonymous["history"] == [] and ready_anonymous["identity"] is None
    assert ready_anonymous["conversation_id"] != ready["conversation_id"]
    await anonymous.disconnect()


async def test_the_admin_preview_connects_from_the_servers_own_origin(shop_bot):
    own = "https://chat.example.com"
    refused = socket(shop_bot, origin=own)
    assert (await refused.connect())[0] is False
    token = await database_sync_to_async(preview_token_issue)(bot=shop_bot)
    comm = socket(shop_bot, origin=own, query={"preview": token})
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=10))["type"] == "session.ready"
    await comm.disconnect()
    # The token does not open the bot to any other site.
    elsewhere = socket(shop_bot, origin="https://evil.example.com", query={"preview": token})
    assert (await elsewhere.connect())[0] is False
