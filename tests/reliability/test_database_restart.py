"""The database drops every connection mid-conversation (a restart or a failover)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from django.db import connection

from conversations.models import Message
from tests.reliability.conftest import ask, connect

pytestmark = pytest.mark.django_db(transaction=True)


APP_NAME = "chatbase-live-db-restart"


def drop_the_servers_connections() -> int:
    """What a server sees of a database restart: all its sessions end at once.

    Only the live server's sessions (tagged with PGAPPNAME): restarting the shared
    embedded database, or ending every session, would also break this test run's
    own pooled connections and the tests after it.
    """
    params = connection.get_connection_params()
    name = params.pop("dbname")
    params.pop("pool", None)
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [name, APP_NAME],
        ).fetchall()
    return len(rows)


def test_a_conversation_goes_on_after_the_database_dropped_every_connection(shop_bot, live_daphne):
    server = live_daphne(env={"PGAPPNAME": APP_NAME})  # libpq tags the server's sessions

    async def conversation():
        ws, _ = await connect(server, shop_bot)
        first = await ask(ws, "How long do refunds take?", "m1")
        dropped = await asyncio.to_thread(drop_the_servers_connections)
        second = await ask(ws, "How many working days until my order ships?", "m2")
        third = await ask(ws, "Must items be unused for a refund?", "m3")
        await ws.close()
        return first, dropped, second, third

    first, dropped, second, third = asyncio.run(conversation())

    assert first[-1]["type"] == "answer.done"
    assert dropped >= 1  # the server's pooled connections
    # The pool checks connections before use, so the next message neither fails nor is lost.
    assert second[-1]["type"] == "answer.done", second[-1]
    assert "two working days" in second[-1]["text"]
    assert third[-1]["type"] == "answer.done"
    assert list(Message.objects.filter(role="user").order_by("id").values_list("client_id", flat=True)) == [
        "m1",
        "m2",
        "m3",
    ]
