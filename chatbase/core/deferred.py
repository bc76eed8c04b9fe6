"""Background tasks that wait for the reply, when they would run inside it.

Without a broker (the embedded defaults, DESIGN.md section 2) Celery runs a task
eagerly, in the thread that sends it. The conversation's rolling summary, sent when
an answer is stored every few turns, then made a whole model call between the
answer's last token and `answer.done`. Code preparing a reply opens
`held_until_reply()`; tasks sent through `enqueue` inside it are kept and run by
`run_held` once the reply is out. With a broker, `enqueue` is `delay`: publishing is
cheap, and a worker runs the task whatever happens to this process.

Lead detection of a chat message is held too, by the chat socket, but only until
its answer's first token is out (leads.receivers, ChatConsumer): run before the
store returned, its ~2.5 ms of CPU and its query sat between the message and the
first token; held until the reply, 100 answers finishing together ran 100 detections
beside the token relay of the streams still answering (bench/streaming.py). After
each answer's first token they run about as staggered as the messages came (a
socket's later message waits for the answers before its own, and so does its
detection).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

logger = logging.getLogger(__name__)


class Held:
    """The tasks held for one reply. Once closed (taken to be run), a task sent late
    (say, by the finish of an answer that was cancelled twice) is not held but run
    at once: nothing is left in a list nobody will run."""

    def __init__(self):
        self._calls: list[Callable[[], object]] = []
        self._closed = False
        self._lock = threading.Lock()  # the sender is a database thread, the reader the event loop

    def add(self, call: Callable[[], object]) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._calls.append(call)
            return True

    def close(self) -> list[Callable[[], object]]:
        """What was held, oldest first; nothing more is held after this."""
        with self._lock:
            self._closed = True
            calls, self._calls = self._calls, []
            return calls

    def __len__(self) -> int:
        return len(self._calls)


# Context, not thread, state: the ORM work of an async consumer runs on database
# threads that asgiref enters with a copy of the consumer's context, so a task sent
# there (from an on_commit callback) lands in the consumer's list.
_held: ContextVar[Held | None] = ContextVar("chatbase_held_tasks", default=None)


def enqueue(task, *args, **kwargs) -> None:
    """`task.delay(*args, **kwargs)`, or held for the reply (see the module docstring)."""
    held = _held.get()
    if (
        held is not None
        and task.app.conf.task_always_eager
        and held.add(functools.partial(task.delay, *args, **kwargs))
    ):
        return
    task.delay(*args, **kwargs)


def hold(call: Callable[[], object]) -> bool:
    """Keep `call` (work of this process, not a task) for the reply being prepared;
    False when none is (or it was already taken): the caller runs it."""
    held = _held.get()
    return held is not None and held.add(call)


@contextlib.contextmanager
def not_held() -> Iterator[None]:
    """Within: nothing is held (work run beside a reply, whose tasks are its own)."""
    token = _held.set(None)
    try:
        yield
    finally:
        _held.reset(token)


@contextlib.contextmanager
def held_until_reply(held: Held | None = None) -> Iterator[Held]:
    """Within: eager tasks sent through `enqueue` are added to the Held yielded (or to
    `held`, to gather several steps of one reply) instead of run."""
    held = Held() if held is None else held
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def run(calls: list[Callable[[], object]]) -> None:
    """Run held calls, oldest first; one failing does not stop the others (each was
    sent after its data committed, and an eager task's failure is its own)."""
    for call in calls:
        try:
            call()
        except Exception:
            logger.exception("A task held for the reply failed")


def run_held(held: Held) -> None:
    """Close `held` and run what it held."""
    run(held.close())
