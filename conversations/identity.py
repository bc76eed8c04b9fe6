"""Who is on the other end of a chat: signed visitor tokens bound to one bot.

A token is `signing.dumps({"b": bot_id, "v": visitor_id})` with a timestamp,
checked with a maximum age. It proves nothing about a person, only that this
browser was given this visitor id by this bot before, so that its history can
be returned. A token for another bot is worthless here.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core import signing

from bots.models import Bot

_SALT = "chatbase.conversations.visitor"


def visitor_token_issue(*, bot: Bot, visitor_id: str | None = None) -> tuple[str, str]:
    """(visitor_id, token). Pass a visitor id to re-sign it (sliding expiry)."""
    visitor_id = visitor_id or "v_" + secrets.token_urlsafe(16)
    return visitor_id, signing.dumps({"b": bot.pk, "v": visitor_id}, salt=_SALT, compress=False)


def visitor_token_read(*, bot: Bot, token: str) -> str | None:
    """The visitor id in a valid, unexpired token for this bot; None otherwise."""
    if not token or len(token) > 500:
        return None
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.VISITOR_TOKEN_MAX_AGE_DAYS * 86400)
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(data, dict) or data.get("b") != bot.pk or not isinstance(data.get("v"), str):
        return None
    return data["v"]
