"""Daily token budgets: per bot (the owner's spend) and per visitor (one visitor's share).

A bot's `configuration.daily_token_budget` caps the model tokens (input + output) all
of its conversations may use per UTC day; `configuration.visitor_daily_token_cap`
(or the `VISITOR_DAILY_TOKEN_CAP` setting) caps one visitor's. When either is spent,
the next answer is refused with `rate_limited` before any model is called; the
visitor's message is already stored, so nothing they wrote is lost.

Usage is counted in the cache (Redis when configured, so every process shares it)
under keys that expire with the day. A missing key, after a cache flush or on a new
process with the local-memory cache, is rebuilt from the stored messages, which
are the source of truth.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.cache import cache
from django.db.models import F, Sum
from django.utils import timezone

from chatbase.core.errors import RateLimited
from chatbase.core.ratelimit import CACHE_ERRORS, cache_unavailable
from conversations.models import Conversation, Message

# The day's counters outlive the day a little, so a late increment never recreates one.
_TTL_SLACK_SECONDS = 3600


def day_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or timezone.now()
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _seconds_left(now: dt.datetime) -> int:
    return int((day_start(now) + dt.timedelta(days=1) - now).total_seconds())


def _bot_key(bot_id: int, day: dt.datetime) -> str:
    return f"budget:bot:{bot_id}:{day:%Y%m%d}"


def _visitor_key(bot_id: int, visitor_id: str, day: dt.datetime) -> str:
    return f"budget:visitor:{bot_id}:{visitor_id}:{day:%Y%m%d}"


def _spent_in_db(*, bot_id: int, since: dt.datetime, visitor_id: str | None = None) -> int:
    messages = Message.objects.filter(conversation__bot_id=bot_id, role=Message.Role.ASSISTANT, created_at__gte=since)
    if visitor_id is not None:
        messages = messages.filter(conversation__visitor_id=visitor_id)
    total = messages.aggregate(total=Sum(F("input_tokens") + F("output_tokens")))["total"]
    return int(total or 0)


def _spent(key: str, *, bot_id: int, now: dt.datetime, visitor_id: str | None = None) -> int:
    try:
        value = cache.get(key)
        if value is None:
            value = _spent_in_db(bot_id=bot_id, since=day_start(now), visitor_id=visitor_id)
            # add, not set: a concurrent increment that recreated the key wins.
            cache.add(key, value, _seconds_left(now) + _TTL_SLACK_SECONDS)
            value = cache.get(key, value)
    except CACHE_ERRORS as exc:
        # The stored messages are the truth; the cache only saves the sum.
        cache_unavailable("budget", exc)
        value = _spent_in_db(bot_id=bot_id, since=day_start(now), visitor_id=visitor_id)
    return int(value)


def budget_visitor_new(*, bot_id: int, visitor_id: str) -> None:
    """A visitor id minted just now has spent nothing today: the cache is told, so that
    their first question does not sum the day's messages to find 0."""
    now = timezone.now()
    try:
        # add: never overwrite a count that exists (an id is only new once).
        cache.add(_visitor_key(bot_id, visitor_id, day_start(now)), 0, _seconds_left(now) + _TTL_SLACK_SECONDS)
    except CACHE_ERRORS as exc:
        cache_unavailable("budget", exc)  # the first question sums the messages instead


def limits_for(bot) -> tuple[int, int]:
    """(bot budget, visitor cap) in tokens per day; 0 means no limit."""
    configuration = bot.configuration or {}
    visitor_cap = configuration.get("visitor_daily_token_cap", settings.VISITOR_DAILY_TOKEN_CAP)
    return int(configuration.get("daily_token_budget") or 0), int(visitor_cap or 0)


def budget_check(*, conversation: Conversation) -> None:
    """Raise RateLimited when the bot's or this visitor's tokens for today are spent."""
    bot = conversation.bot
    bot_budget, visitor_cap = limits_for(bot)
    if not bot_budget and not visitor_cap:
        return
    now = timezone.now()
    retry_after = _seconds_left(now)
    if bot_budget and _spent(_bot_key(bot.pk, day_start(now)), bot_id=bot.pk, now=now) >= bot_budget:
        raise RateLimited(
            "This assistant has reached its usage limit for today. Please try again tomorrow.",
            retry_after=retry_after,
            extra={"reason": "bot_daily_budget"},
        )
    if visitor_cap:
        key = _visitor_key(bot.pk, conversation.visitor_id, day_start(now))
        if _spent(key, bot_id=bot.pk, now=now, visitor_id=conversation.visitor_id) >= visitor_cap:
            raise RateLimited(
                "You have reached today's message limit for this assistant. Please try again tomorrow.",
                retry_after=retry_after,
                extra={"reason": "visitor_daily_cap"},
            )


def budget_record(*, conversation: Conversation, tokens: int) -> None:
    """Count an answer's tokens against today's budgets (after it was stored)."""
    if tokens <= 0:
        return
    now = timezone.now()
    bot_id = conversation.bot_id
    for key, visitor_id in (
        (_bot_key(bot_id, day_start(now)), None),
        (_visitor_key(bot_id, conversation.visitor_id, day_start(now)), conversation.visitor_id),
    ):
        try:
            cache.incr(key, tokens)
        except CACHE_ERRORS as exc:
            # If Redis kept its data through the outage this answer goes uncounted
            # until tomorrow's key: budgets are a spending brake, not the bill (the
            # stored messages are), and a restarted Redis rebuilds from them anyway.
            cache_unavailable("budget", exc)
            return
        except ValueError:
            # Not counted yet today (or flushed): the stored messages, which already
            # include this answer, rebuild the counter.
            _spent(key, bot_id=bot_id, now=now, visitor_id=visitor_id)


def bot_tokens_today(*, bot_id: int) -> int:
    now = timezone.now()
    return _spent(_bot_key(bot_id, day_start(now)), bot_id=bot_id, now=now)
