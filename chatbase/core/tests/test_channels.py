"""The channel layer works (in-memory, or Redis when REDIS_URL is set)."""

import pytest
from channels.testing import WebsocketCommunicator

from chatbase.asgi import application

# Every message a consumer handles runs Django's close_old_connections() (channels 4.2+),
# which inspects any connection an earlier test left on the consumer thread.
pytestmark = pytest.mark.django_db


async def test_ping_round_trips_through_the_channel_layer(settings):
    communicator = WebsocketCommunicator(application, "/ws/ping/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping", "payload": "hello"})
    reply = await communicator.receive_json_from(timeout=5)
    assert reply == {"type": "pong", "payload": "hello", "via": "channel_layer"}
    await communicator.disconnect()


async def test_bad_frames_get_error_frames_and_the_socket_stays_open():
    communicator = WebsocketCommunicator(application, "/ws/ping/")
    await communicator.connect()
    await communicator.send_to(text_data="{nope")
    assert (await communicator.receive_json_from())["code"] == "invalid"
    await communicator.send_json_to({"type": "nope"})
    assert (await communicator.receive_json_from())["code"] == "invalid"
    await communicator.send_json_to(["not", "an", "object"])
    assert (await communicator.receive_json_from())["code"] == "invalid"
    await communicator.send_json_to({"type": "ping", "payload": {"nested": 1}})
    assert (await communicator.receive_json_from())["code"] == "invalid"
    await communicator.send_json_to({"type": "ping", "payload": 1})
    assert (await communicator.receive_json_from())["type"] == "pong"
    await communicator.disconnect()


async def test_unknown_websocket_path_is_refused():
    communicator = WebsocketCommunicator(application, "/ws/nothing/")
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4404


@pytest.mark.redis
def test_redis_channel_layer_is_configured(settings):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert type(layer).__module__.startswith("channels_redis")
    assert layer.hosts[0]["socket_timeout"] is None


async def test_frames_skip_channels_per_message_close_old_connections_hop(monkeypatch):
    # Channels runs close_old_connections() on its one thread-sensitive thread for every
    # message a consumer handles; ours close connections around each database call instead.
    import channels.consumer

    hops = []

    async def counting():
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    communicator = WebsocketCommunicator(application, "/ws/ping/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "ping", "payload": 1})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "pong"
    await communicator.disconnect()
    assert hops == []


@pytest.mark.django_db(transaction=True)
async def test_chat_database_calls_run_on_their_own_few_threads(settings):
    import threading

    from chatbase.core.db import db_call

    names = {await db_call(lambda: threading.current_thread().name)() for _ in range(20)}
    assert all(name.startswith("chat-db") for name in names)
    assert len(names) <= settings.CHAT_DB_THREADS


def test_the_start_up_heap_is_frozen_out_of_the_collectors_reach():
    import gc

    import chatbase.asgi  # noqa: F401  (what Daphne imports)

    assert gc.get_freeze_count() > 100_000
