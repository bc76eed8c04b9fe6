"""Database work from async code (the chat sockets, the chat engine)."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings


@functools.cache
def _chat_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, settings.CHAT_DB_THREADS), thread_name_prefix="chat-db")


def db_call(function):
    """`function` as a coroutine on one of CHAT_DB_THREADS threads.

    Not asgiref's one thread-sensitive thread (channels' default), where every
    socket of the process queued for a single thread; and not an unbounded pool:
    ORM work is Python under one GIL, so beyond a couple of threads (to overlap their
    database round trips) more only contend with the event loop relaying tokens
    (bench/streaming.py). Each call is self-contained (its own transaction, its
    connection closed around it), so any of the threads may run it.
    """
    return database_sync_to_async(function, thread_sensitive=False, executor=_chat_executor())
