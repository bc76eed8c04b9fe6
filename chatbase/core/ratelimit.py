"""Fixed-window rate limits kept in Django's cache (Redis when configured, so every
process shares them; process memory otherwise).

When the cache is unreachable the limits fail open: refusing every visitor because
the counter store is down would turn a Redis outage into a chat outage. The failure
is logged (at most once a minute per process) and counted in
`chatbase_cache_errors_total`, so an operator sees that limits are off.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from chatbase.core import metrics
from chatbase.core.errors import RateLimited

logger = logging.getLogger(__name__)

try:
    from redis.exceptions import RedisError

    CACHE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
except ImportError:  # pragma: no cover - redis is a dependency
    CACHE_ERRORS = (OSError,)

_last_warning = 0.0


def cache_unavailable(purpose: str, exc: BaseException) -> None:
    """Record that the cache failed and the caller carried on without it."""
    global _last_warning
    metrics.cache_errors.labels(purpose).inc()
    now = time.monotonic()
    if now - _last_warning > 60:
        _last_warning = now
        logger.warning("cache unavailable (%s): %s; carrying on without it", purpose, exc)


_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    limit: int
    window: int  # seconds

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'20/min', '5/10s', '1000/day'."""
        match = _RATE.match(text.lower())
        if not match or match.group(3) not in _UNITS:
            raise ValueError(f"Not a rate: {text!r} (expected e.g. '20/min' or '5/10s').")
        multiple = int(match.group(2) or 1)
        return cls(limit=int(match.group(1)), window=multiple * _UNITS[match.group(3)])


def _window(key: str, rate: Rate, now: float) -> tuple[str, float]:
    start = int(now // rate.window) * rate.window
    return f"ratelimit:{key}:{rate.window}:{start}", start + rate.window - now


def rate_limit_hit(*, key: str, rate: Rate) -> None:
    """Count one hit; raise RateLimited (with Retry-After) past the limit."""
    try:
        _hit(key, rate)
    except CACHE_ERRORS as exc:
        cache_unavailable("ratelimit", exc)


async def arate_limit_hit(*, key: str, rate: Rate) -> None:
    await arate_limits_hit((key, rate))


async def arate_limits_hit(*hits: tuple[str, Rate]) -> None:
    """Count one hit of each (key, rate), in order; raise RateLimited at the first one
    past its limit (the later ones are then not counted).

    Django's async cache methods each take a trip to a worker thread, one after the
    other (add, then incr), for every limit: on a chat message that was four trips
    before it was stored. A process-local cache has no I/O to wait for and is counted
    right here; any other (Redis) is counted in one trip for all of the hits.
    """
    if _cache_is_local():
        _hits(hits)
    else:
        await sync_to_async(_hits, thread_sensitive=False)(hits)


def _hits(hits: tuple[tuple[str, Rate], ...]) -> None:
    for key, rate in hits:
        rate_limit_hit(key=key, rate=rate)


def _cache_is_local() -> bool:
    return isinstance(caches[DEFAULT_CACHE_ALIAS], LocMemCache | DummyCache)


def _hit(key: str, rate: Rate) -> None:
    cache_key, remaining = _window(key, rate, time.time())
    # add() only creates: the first hit of a window sets the counter and its expiry.
    if cache.add(cache_key, 1, timeout=rate.window + 1):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add() and incr()
            cache.add(cache_key, 1, timeout=rate.window + 1)
            count = 1
    if count > rate.limit:
        raise RateLimited(retry_after=remaining)
