"""Background tasks that wait for the reply, when they would run inside it.

Without a broker (the embedded defaults, DESIGN.md section 2) Celery runs a task
eagerly, in the thread that sends it. The conversation's rolling summary, sent when
an answer is stored every few turns, then made a whole model call between the
answer's last token and `answer.done`. Code preparing a reply opens
`held_until_reply()`; tasks sent through `enqueue` inside it are kept and run by
`run_held` once the reply is out. With a broker, `enqueue` is `delay`: publishing is
cheap, and a worker runs the task whatever happens to this process.

Lead detection is deliberately not held (leads.receivers): ~2.5 ms of CPU before
the first token cost less than 100 detections running beside the token relay of the
streams still answering (bench/streaming.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar

logger = logging.getLogger(__name__)

# Context, not thread, state: the ORM work of an async consumer runs on database
# threads that asgiref enters with a copy of the consumer's context, so a task sent
# there (from an on_commit callback) lands in the consumer's list.
_held: ContextVar[list[Callable[[], object]] | None] = ContextVar("chatbase_held_tasks", default=None)


def enqueue(task, *args, **kwargs) -> None:
    """`task.delay(*args, **kwargs)`, or held for the reply (see the module docstring)."""
    held = _held.get()
    if held is not None and task.app.conf.task_always_eager:
        held.append(functools.partial(task.delay, *args, **kwargs))
        return
    task.delay(*args, **kwargs)


@contextlib.contextmanager
def held_until_reply(held: list[Callable[[], object]] | None = None) -> Iterator[list[Callable[[], object]]]:
    """Within: eager tasks sent through `enqueue` are appended to the list yielded (or
    to `held`, to gather several steps of one reply) instead of run."""
    held = [] if held is None else held
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def run_held(held: list[Callable[[], object]]) -> None:
    """Run what was held, oldest first; one failing does not stop the others (each was
    sent after its data committed, and an eager task's failure is its own)."""
    while held:
        call = held.pop(0)
        try:
            call()
        except Exception:
            logger.exception("A task held for the reply failed")
