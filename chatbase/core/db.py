"""Database work from async code (the chat sockets, the chat engine)."""

from __future__ import annotations

import functools
import select
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

# A kept connection is handed back (and a fresh, checked one taken) after this long:
# long-lived backends grow, and a failover's new address is picked up.
KEPT_CONNECTION_MAX_AGE_SECONDS = 300


def _hung_up(raw) -> bool:
    """Whether the server closed an idle connection (a restart, a failover, an idle
    timeout): it then sends a last message or EOF, which makes the socket readable.
    An idle connection in autocommit is otherwise never readable: one syscall."""
    if raw.closed or raw.broken:
        return True
    try:
        # poll, not select: a busy server holds thousands of sockets, and select()
        # refuses descriptors above 1023.
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def kept_connections_check() -> None:
    """Give back this thread's connection if it must not be used again: an error
    happened on it, a transaction was left open, it is old, or the server hung up.
    The next query then takes one from the pool, which checks it (DB_HEALTH_CHECKS)."""
    now = time.monotonic()
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None:
            continue
        if getattr(connection, "_kept_raw", None) is not raw:
            connection._kept_raw, connection._kept_since = raw, now
        if _hung_up(raw):
            # Closed first: the client has not read the server's goodbye yet, so the
            # pool would take the connection back as a healthy idle one.
            raw.close()
            connection.close()
        elif (
            connection.errors_occurred
            or connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]
            or now - connection._kept_since > KEPT_CONNECTION_MAX_AGE_SECONDS
        ):
            connection.close()


def kept_connection(function):
    """`function` on its thread's kept connection, for the chat's own few threads.

    Django gives a connection back to the pool after every request, and every
    checkout costs a round trip (the pool's check) and Django's connection set-up:
    ~0.4 ms, several times per question, on the path to the first token
    (bench/streaming.py). The chat's threads are few and busy, so each keeps its
    connection instead, checked without a round trip before and after each call.
    """

    @functools.wraps(function)
    def run(*args, **kwargs):
        kept_connections_check()
        try:
            return function(*args, **kwargs)
        finally:
            kept_connections_check()

    return run


@functools.cache
def _chat_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, settings.CHAT_DB_THREADS), thread_name_prefix="chat-db")


@functools.cache
def _after_reply_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-after-reply")


def db_call(function):
    """`function` as a coroutine on one of CHAT_DB_THREADS threads, on its kept connection.

    Not asgiref's one thread-sensitive thread (channels' default), where every
    socket of the process queued for a single thread; and not an unbounded pool:
    ORM work is Python under one GIL, so beyond a couple of threads (to overlap their
    database round trips) more only contend with the event loop relaying tokens
    (bench/streaming.py). Each call is self-contained (its own transaction), so any
    of the threads may run it.
    """
    return SyncToAsync(kept_connection(function), thread_sensitive=False, executor=_chat_executor())


def after_reply_call(function):
    """`function` as a coroutine on the one thread for work done after a reply (held
    in-process tasks, chatbase.core.deferred): a rolling summary's model call there
    holds its thread for seconds, which must not be one of the few CHAT_DB_THREADS
    every socket's messages wait for."""
    return SyncToAsync(kept_connection(function), thread_sensitive=False, executor=_after_reply_executor())
