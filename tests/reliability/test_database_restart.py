"""The database drops every connection mid-conversation (a restart or a failover)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from django.db import connection

from conversations.models import Message
from tests.reliability.conftest import ask, connect

pytestmark = pytest.mark.django_db(transaction=True)


def drop_every_other_connection() -> int:
    """What clients see of a restart: every server-side session ends at once.

    (Restarting the shared embedded server itself would also end this test run's own
    session; terminating the backends is the same event from the application's side.)
    """
    params = connection.get_connection_params()
    name = params.pop("dbname")
    params.pop("pool", None)
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    return len(rows)


def test_a_conversation_goes_on_after_the_database_dropped_every_connection(shop_bot, live_daphne):
    server = live_daphne()

    async def conversation():
        ws, _ = await connect(server, shop_bot)
        first = await ask(ws, "How long do refunds take?", "m1")
        dropped = await asyncio.to_thread(drop_every_other_connection)
        second = await ask(ws, "How many working days until my order ships?", "m2")
        third = await ask(ws, "Must items be unused for a refund?", "m3")
        await ws.close()
        return first, dropped, second, third

    first, dropped, second, third = asyncio.run(conversation())

    assert first[-1]["type"] == "answer.done"
    assert dropped >= 1  # the server's pooled connections were among them
    # The pool checks connections before use, so the next message neither fails nor is lost.
    assert second[-1]["type"] == "answer.done", second[-1]
    assert "two working days" in second[-1]["text"]
    assert third[-1]["type"] == "answer.done"
    connection.close()  # this test's own session was terminated too
    assert list(Message.objects.filter(role="user").order_by("id").values_list("client_id", flat=True)) == [
        "m1",
        "m2",
        "m3",
    ]
