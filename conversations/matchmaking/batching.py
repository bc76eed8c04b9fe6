"""Database work of many sockets, done together: one trip for everything that is waiting.

A burst of `match.join`s (a push notification, the top of the hour) used to cost a
transaction each, one after the other on a few threads: 1,000 users joining over
5 seconds waited 0.6 s for a pairing at the median, 1.7 s at the 99th percentile
(bench/matchmaking.py). A Coalescer sends whatever was submitted while its
previous trip ran as the next trip's batch: a lone request waits for nobody, a
burst pays a few transactions instead of hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from django.db import transaction

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """`await submit(item)` gets `function(items)[i]` for its item, run on a database thread.

    `function` takes the batch in submission order and returns one result per item,
    in one transaction. If it raises, each item of the batch is tried alone (in its
    own transaction), so one bad request fails only its own caller. `then(items,
    results)`, if given, runs after the commit (on the same thread, for the items that
    succeeded) and returns the results their callers get; it must not raise. State is
    kept per event loop: Daphne runs one, tests start many.
    """

    def __init__(
        self,
        function: Callable[[Sequence[Item]], list],
        *,
        run,
        then: Callable[[Sequence[Item], list], list[Result]] | None = None,
        limit: int = 200,
    ):
        self._function = function
        self._then = then
        # A coroutine factory that runs a sync callable on a database thread (queue.db).
        self._run = run
        self._limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._pending, self._task = loop, [], None
        future = loop.create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
            try:
                results = await self._run(self._call)([item for item, _ in batch])
            except Exception as exc:  # the trip itself failed (no thread, no database)
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # its caller went away
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _call(self, items: list[Item]) -> list[Result | BaseException]:
        try:
            outcomes: list = self._commit(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            logger.info("batch of %d for %s failed (%s); trying each alone", len(items), self._function.__name__, exc)
            outcomes = []
            for item in items:
                try:
                    outcomes.extend(self._commit([item]))
                except Exception as item_exc:
                    outcomes.append(item_exc)
        if self._then is None:
            return outcomes
        # After the commit, and never retried: the work is done whatever `then` meets,
        # so `then` must not fail (it makes do, e.g. with a conservative answer).
        done = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, BaseException)]
        followed = self._then([items[i] for i in done], [outcomes[i] for i in done])
        for i, result in zip(done, followed, strict=True):
            outcomes[i] = result
        return outcomes

    def _commit(self, items: list[Item]) -> list:
        with transaction.atomic():
            results = self._function(items)
            if len(results) != len(items):  # a bug: roll back rather than hand out wrong answers
                raise RuntimeError(f"{self._function.__name__} returned {len(results)} results for {len(items)}")
        return results
