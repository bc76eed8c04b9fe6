"""The memory-rule language: ``when EVENT then ACTION [key=value ...]``.

Values may be quoted the shell way (``title="Call them back"``). Parsing either
returns a :class:`ParsedRule` or raises ``ValidationFailed`` with the reason, so the
API answers 400 with something an owner can act on.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from chatbase.core.errors import ValidationFailed

EVENTS = (
    "lead.created",
    "lead.qualified",
    "conversation.ended",
    "hubspot.contact.creation",
    "hubspot.contact.propertyChange",
    "gmail.message.received",
    "calendar.event.created",
)
PRIORITIES = ("low", "normal", "high")
LOG_LEVELS = ("debug", "info", "warning", "error")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_DURATION = re.compile(r"^(\d{1,4})([mhd])$")
MAX_VALUE_CHARS = 300


def parse_duration(value: str) -> timedelta:
    match = _DURATION.match(value)
    if not match:
        raise ValueError("a duration such as 30m, 4h or 2d")
    amount, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=amount), "h": timedelta(hours=amount), "d": timedelta(days=amount)}[unit]


def _choice(choices: tuple[str, ...]):
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return check


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty text")
    return value


def _email(value: str) -> str:
    try:
        validate_email(value)
    except ValidationError as exc:
        raise ValueError("an e-mail address") from exc
    return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value


@dataclass(frozen=True)
class ActionSpec:
    # parameter -> validator (raises ValueError naming what is expected)
    params: dict
    required: tuple[str, ...] = ()


ACTIONS: dict[str, ActionSpec] = {
    "create_task": ActionSpec(
        params={"title": _text, "type": _text, "priority": _choice(PRIORITIES), "due_in": _duration}
    ),
    "log": ActionSpec(params={"message": _text, "level": _choice(LOG_LEVELS)}),
    "sync_to_hubspot": ActionSpec(params={}),
    "tag_lead": ActionSpec(params={"tag": _text}, required=("tag",)),
    "notify_email": ActionSpec(params={"to": _email, "subject": _text}),
}


@dataclass(frozen=True)
class ParsedRule:
    event: str
    action: str
    params: dict


def parse_rule(text: str) -> ParsedRule:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed("A rule is written: when EVENT then ACTION [key=value ...].", code="invalid_rule")
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValidationFailed(f"The rule cannot be read: {exc} (check the quotes).", code="invalid_rule") from exc
    if len(tokens) < 4 or tokens[0].lower() != "when" or tokens[2].lower() != "then":
        raise ValidationFailed(
            "A rule is written: when EVENT then ACTION [key=value ...], "
            "e.g. when lead.qualified then create_task priority=high.",
            code="invalid_rule",
        )
    event, action = tokens[1], tokens[3]
    if event not in EVENTS:
        raise ValidationFailed(f"Unknown event '{event}'. Events: {', '.join(EVENTS)}.", code="unknown_event")
    spec = ACTIONS.get(action)
    if spec is None:
        raise ValidationFailed(f"Unknown action '{action}'. Actions: {', '.join(ACTIONS)}.", code="unknown_action")
    params: dict[str, str] = {}
    for token in tokens[4:]:
        key, sep, value = token.partition("=")
        if not sep or not _KEY.match(key):
            raise ValidationFailed(
                f"'{token}' is not a parameter: write key=value (quote values with spaces).", code="invalid_parameter"
            )
        if key in params:
            raise ValidationFailed(f"The parameter '{key}' is given twice.", code="invalid_parameter")
        if key not in spec.params:
            allowed = ", ".join(spec.params) or "none"
            raise ValidationFailed(
                f"{action} has no parameter '{key}' (parameters: {allowed}).", code="invalid_parameter"
            )
        if len(value) > MAX_VALUE_CHARS:
            raise ValidationFailed(f"The value of '{key}' is longer than {MAX_VALUE_CHARS} characters.")
        try:
            params[key] = spec.params[key](value)
        except ValueError as exc:
            raise ValidationFailed(f"'{key}' must be {exc}.", code="invalid_parameter") from exc
    missing = [key for key in spec.required if key not in params]
    if missing:
        raise ValidationFailed(f"{action} needs {', '.join(missing)}=...", code="invalid_parameter")
    return ParsedRule(event=event, action=action, params=params)
