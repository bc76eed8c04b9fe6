"""Prompt templates: the shipped personalities, selection, caching and personalisation.

Selection order: an explicit choice, else the bot's template, else the first
template whose rules match the conversation (keywords, topics, time of day,
age), else the default template.

Templates are read on every message, so they are cached in process memory. The
cache is keyed by a version number kept in Django's cache: every save bumps it
(`template_cache_invalidate`), and with Redis every process sees the bump.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime

from django.core.cache import cache
from django.utils import timezone

from bots.models import Bot, PromptTemplate
from chatbase.core.ratelimit import CACHE_ERRORS, cache_unavailable

_VERSION_KEY = "prompt-templates:version"
_lock = threading.Lock()
_cached: tuple[int, dict[str, PromptTemplate]] | None = None

# The personalities every installation ships with (data migration 0002 and seed_demo).
SHIPPED_TEMPLATES: list[dict] = [
    {
        "slug": "general_conversation",
        "name": "General conversation",
        "description": "Friendly, helpful and concise. The default.",
        "is_default": True,
        "temperature": 0.5,
        "max_tokens": 600,
        "personality_traits": ["helpful", "clear", "friendly"],
        "selection_rules": {"priority": 0},
        "system_prompt": (
            "You are {bot_name}, a friendly and helpful assistant. Answer clearly and concisely. "
            "When the knowledge passages answer the question, rely on them and cite them by number; "
            "when they do not, say so rather than guessing. It is {time_of_day} for the user."
        ),
    },
    {
        "slug": "support_agent",
        "name": "Support agent",
        "description": "Patient customer support that solves the problem step by step.",
        "temperature": 0.2,
        "max_tokens": 700,
        "personality_traits": ["patient", "precise", "empathetic"],
        "selection_rules": {
            "priority": 20,
            "keywords": [
                "error",
                "broken",
                "not working",
                "doesn't work",
                "refund",
                "cancel",
                "order",
                "warranty",
                "support",
                "complaint",
                "issue",
                "problem",
                "fix",
                "help me",
            ],
        },
        "system_prompt": (
            "You are {bot_name}, a patient customer-support agent. Acknowledge the problem, then solve it "
            "step by step using only the knowledge passages, citing them by number. If the passages do not "
            "cover it, say so and offer to connect the user with the team. Never invent policies, prices or "
            "deadlines."
        ),
    },
    {
        "slug": "casual_chat",
        "name": "Casual chat",
        "description": "Relaxed small talk for social conversations.",
        "temperature": 0.9,
        "max_tokens": 300,
        "personality_traits": ["relaxed", "curious", "warm", "funny"],
        "selection_rules": {
            "priority": 5,
            "keywords": ["bored", "hang out", "just chatting", "what's up", "whats up", "how are you", "lol"],
        },
        "system_prompt": (
            "You are {bot_name}, chatting casually with {name}. Keep replies short, warm and natural, like a "
            "friend texting. Ask about what they enjoy ({interests}). Their mood seems {mood}. Earlier topics: "
            "{topics}."
        ),
    },
    {
        "slug": "dating_advice",
        "name": "Dating advice",
        "description": "Kind, practical relationship and dating advice.",
        "temperature": 0.7,
        "max_tokens": 500,
        "personality_traits": ["kind", "honest", "practical", "respectful"],
        "selection_rules": {
            "priority": 30,
            "keywords": [
                "date",
                "dating",
                "relationship",
                "girlfriend",
                "boyfriend",
                "crush",
                "partner",
                "breakup",
                "broke up",
                "ex ",
                "marriage",
                "love life",
                "first date",
            ],
            "topics": ["relationships"],
            "min_age": 18,
        },
        "system_prompt": (
            "You are {bot_name}, a kind and practical dating coach talking with {name} ({age}). Give honest, "
            "respectful advice that puts consent, safety and self-respect first. Ask a clarifying question "
            "when the situation is unclear. Do not give medical, legal or crisis advice: point to "
            "professional help when it is needed."
        ),
    },
    {
        "slug": "flirty_chat",
        "name": "Flirty chat",
        "description": "Playful and charming, never explicit.",
        "temperature": 1.0,
        "max_tokens": 250,
        "personality_traits": ["playful", "charming", "witty", "respectful"],
        "selection_rules": {
            "priority": 10,
            "keywords": ["flirt", "cute", "handsome", "beautiful", "wink", "charming"],
            "min_age": 18,
            "hours": [18, 2],
        },
        "system_prompt": (
            "You are {bot_name}, a playful, witty companion chatting with {name}. Be charming and light-hearted "
            "with gentle compliments and humour. Never be sexually explicit, never pressure, and steer away "
            "politely if the user asks for explicit content or seems under 18. Their interests: {interests}."
        ),
    },
]


def _new_version() -> int:
    # Never a small constant: after a cache flush, a restarted count could equal the
    # version a process already holds, and that process would keep stale templates.
    return time.time_ns()


def template_cache_invalidate() -> None:
    try:
        try:
            cache.incr(_VERSION_KEY)
        except ValueError:  # the key expired, was flushed or was never set
            cache.set(_VERSION_KEY, _new_version(), timeout=None)
    except CACHE_ERRORS as exc:
        # Other processes keep their copy until the cache is back; this one reloads.
        cache_unavailable("templates", exc)
        global _cached
        _cached = None


def _templates() -> dict[str, PromptTemplate]:
    global _cached
    try:
        version = cache.get_or_set(_VERSION_KEY, _new_version, timeout=None)
    except CACHE_ERRORS as exc:
        # Without the shared version, keep what this process has (or load it once):
        # answers go on with templates at most as old as the outage.
        cache_unavailable("templates", exc)
        version = _cached[0] if _cached is not None else -1
    with _lock:
        if _cached is None or _cached[0] != version:
            _cached = (version, {t.slug: t for t in PromptTemplate.objects.all()})
        return _cached[1]


def template_get(*, slug: str) -> PromptTemplate | None:
    return _templates().get(slug)


def template_get_by_pk(pk: int) -> PromptTemplate | None:
    """The cached template with this primary key (a conversation's or a bot's choice),
    None if there is none: read with each turn, where a join would cost more."""
    return next((t for t in _templates().values() if t.pk == pk), None)


def time_of_day(now: datetime) -> str:
    hour = now.hour
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def _in_hours(hours: list[int], hour: int) -> bool:
    start, end = hours
    return start <= hour < end if start <= end else hour >= start or hour < end


def _age(profile: dict) -> int | None:
    try:
        return int(profile.get("age"))
    except (TypeError, ValueError):
        return None


def _rules_match(template: PromptTemplate, *, text: str, profile: dict, hour: int) -> bool:
    rules = template.selection_rules or {}
    age = _age(profile)
    if "min_age" in rules and (age is None or age < rules["min_age"]):
        return False
    if "max_age" in rules and (age is None or age > rules["max_age"]):
        return False
    if "hours" in rules and not _in_hours(rules["hours"], hour):
        return False
    keywords = [k.lower() for k in rules.get("keywords", [])]
    topics = {t.lower() for t in rules.get("topics", [])}
    profile_topics = {str(t).lower() for t in profile.get("topics", []) if isinstance(t, str)}
    if not keywords and not topics:
        return False  # a template with no content rule is chosen only explicitly or as default
    padded = f" {text.lower()} "
    return any(re.search(r"\b" + re.escape(k.strip()) + r"\b", padded) for k in keywords if k.strip()) or bool(
        topics & profile_topics
    )


def template_select(
    *, bot: Bot | None = None, explicit: str | None = None, text: str = "", profile: dict | None = None,
    now: datetime | None = None,
) -> PromptTemplate | None:  # fmt: skip
    """The template for this turn; `text` is the recent conversation (user side)."""
    templates = _templates()
    if explicit and explicit in templates:
        return templates[explicit]
    if bot is not None and bot.template_id:
        chosen = template_get_by_pk(bot.template_id)
        if chosen is not None:
            return chosen
    profile = profile or {}
    hour = timezone.localtime(now or timezone.now()).hour
    matching = [t for t in templates.values() if _rules_match(t, text=text, profile=profile, hour=hour)]
    if matching:
        return max(matching, key=lambda t: ((t.selection_rules or {}).get("priority", 0), -t.pk))
    return next((t for t in templates.values() if t.is_default), None)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "unknown"


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _profile_value(value: object, limit: int = 80) -> str:
    # Profile values come from users or external apps: they are data, not prompt.
    # Braces and newlines are removed so a value cannot open a new instruction block.
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value[:10])
    text = " ".join(re.sub(r"[{}]+", " ", str(value)).split())
    return text[:limit] or "unknown"


def personalise(system_prompt: str, *, bot_name: str, profile: dict | None, now: datetime | None = None) -> str:
    """Fill {name}, {age}, {interests}, {mood}, {topics}, {time_of_day}, {bot_name}; unknown -> "unknown"."""
    profile = profile or {}
    values = _Blank(
        bot_name=_profile_value(bot_name),
        time_of_day=time_of_day(timezone.localtime(now or timezone.now())),
    )
    for key in ("name", "age", "interests", "mood", "topics"):
        if profile.get(key) not in (None, "", []):
            values[key] = _profile_value(profile[key])
    if "name" not in values:
        values["name"] = "the user"
    # str.format would choke on other braces in a staff-written prompt; replace only {word}.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], system_prompt)
