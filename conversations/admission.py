"""How many questions a process prepares at once (CHAT_PREPARE_CONCURRENCY).

Preparing a question (storing it, embedding it, the hybrid search, reading its turn)
is Python on the database and embedding threads, and Python runs one thread at a
time. Under a burst (100 questions at once) those threads are busy without a pause,
and every time the event loop gives the interpreter up for a system call (it makes
several for each token it relays) it waits for them to hand it back: the answers
already streaming stalled, 353-467 ms per token at p99 against 84-95 ms with two
questions prepared at a time (bench/streaming.py, docs/performance.md).

So questions queue here, in arrival order, for one of CHAT_PREPARE_CONCURRENCY slots
per process (per event loop; Daphne has one). A slot is given back before the model
is called: a model's time to its first token (hundreds of milliseconds for a real one)
never holds one. 0 turns the limit off.

The queue orders work; it does not refuse it. A question that waited MAX_WAIT_SECONDS
goes ahead without a slot: a socket handles its frames one at a time, so a longer wait
would also hold back its other frames, its close among them (Daphne stops waiting
for a closed socket's consumer after 10 s and cancels it without `disconnect`).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from django.conf import settings

from chatbase.core import metrics

MAX_WAIT_SECONDS = 8.0

_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


class PrepareSlot:
    """One question's turn to be prepared; `release` gives it back (idempotent)."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore | None):
        self._semaphore = semaphore

    @property
    def held(self) -> bool:
        return self._semaphore is not None

    def release(self) -> None:
        semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()


async def prepare_slot() -> PrepareSlot:
    """Wait for a slot (in arrival order), at most MAX_WAIT_SECONDS: then the question
    goes ahead without one (a slot that is not `held`). Cancelled while waiting, it
    takes none."""
    semaphore = _semaphore()
    if semaphore is None:
        return PrepareSlot(None)
    if not semaphore.locked():
        await semaphore.acquire()  # free: no wait to count
        return PrepareSlot(semaphore)
    waited = time.monotonic()
    metrics.chat_prepare_waiting.inc()
    try:
        async with asyncio.timeout(MAX_WAIT_SECONDS):
            await semaphore.acquire()
    except TimeoutError:
        metrics.chat_prepare_overdue.inc()
        return PrepareSlot(None)
    finally:
        metrics.chat_prepare_waiting.dec()
        metrics.chat_prepare_wait.observe(time.monotonic() - waited)
    return PrepareSlot(semaphore)


def _semaphore() -> asyncio.Semaphore | None:
    limit = settings.CHAT_PREPARE_CONCURRENCY
    if limit <= 0:
        return None
    loop = asyncio.get_running_loop()
    known = _semaphores.get(loop)
    if known is None or known[0] != limit:
        # A changed setting (tests) starts a new one; slots of the old one release to it.
        known = _semaphores[loop] = (limit, asyncio.Semaphore(limit))
    return known[1]
