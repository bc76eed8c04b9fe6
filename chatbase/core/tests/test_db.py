"""The chat's threads keep their database connections (chatbase.core.db)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import OperationalError, connection, transaction

from chatbase.core import db

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_thread():
    """Run a function on one worker thread, on its kept connection."""
    executor = ThreadPoolExecutor(max_workers=1)

    def run(function):
        return executor.submit(db.kept_connection(function)).result(timeout=10)

    yield run
    executor.submit(lambda: connection.close()).result(timeout=10)
    executor.shutdown()


def checkouts() -> int:
    """Connections handed out by the process's pool so far."""
    return connection.pool.get_stats()["requests_num"]


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_thread_keeps_its_connection_between_calls(one_thread):
    first = one_thread(backend_pid)
    before = checkouts()
    assert [one_thread(backend_pid) for _ in range(5)] == [first] * 5
    assert checkouts() == before  # no checkout (and no check's round trip) per call


def test_a_connection_the_server_closed_is_replaced_before_the_next_call(one_thread):
    first = one_thread(backend_pid)
    with connection.cursor() as cursor:  # a restart or failover, as the kept connection sees it
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        for _ in range(100):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [first])
            if not cursor.fetchone()[0]:
                break
            time.sleep(0.02)
    assert one_thread(backend_pid) != first  # no error: the dead connection was dropped first


def test_a_connection_that_failed_is_given_back(one_thread):
    pid = one_thread(backend_pid)

    def cancel():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_cancel_backend(%s)", [pid])
        finally:
            connection.close()

    def cancelled_midway():
        threading.Timer(0.2, cancel).start()
        with connection.cursor() as cursor:  # autocommit: no rollback proves the connection sound
            cursor.execute("SELECT pg_sleep(5)")

    with pytest.raises(OperationalError):
        one_thread(cancelled_midway)
    before = checkouts()
    one_thread(backend_pid)
    assert checkouts() == before + 1  # taken afresh from the pool, which checked it


def test_a_transaction_left_open_is_not_carried_into_the_next_call(one_thread):
    one_thread(backend_pid)
    one_thread(lambda: transaction.set_autocommit(False))
    assert one_thread(connection.get_autocommit) is True


def test_an_old_connection_is_given_back_to_the_pool(one_thread, monkeypatch):
    one_thread(backend_pid)
    monkeypatch.setattr(db, "KEPT_CONNECTION_MAX_AGE_SECONDS", 0)
    before = checkouts()
    one_thread(backend_pid)
    assert checkouts() > before


def test_chat_calls_keep_their_connections(settings):
    import asyncio

    def slow_pid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), pg_sleep(0.05)")
            return cursor.fetchone()[0]

    async def calls(function, together):
        if together:  # every chat thread busy at once: each has started and connected
            return await asyncio.gather(*(db.db_call(function)() for _ in range(2 * settings.CHAT_DB_THREADS)))
        return [await db.db_call(function)() for _ in range(10)]

    pids = set(asyncio.run(calls(slow_pid, together=True)))
    before = checkouts()
    assert set(asyncio.run(calls(backend_pid, together=False))) <= pids
    assert checkouts() == before
