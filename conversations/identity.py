"""Who is on the other end of a chat: signed visitor tokens bound to one bot.

A token is `signing.dumps({"b": bot_id, "v": visitor_id})` with a timestamp,
checked with a maximum age. It proves nothing about a person, only that this
browser was given this visitor id by this bot before, so that its history can
be returned. A token for another bot is worthless here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from django.conf import settings
from django.core import signing

from bots.models import Bot
from chatbase.core.errors import NotAuthenticated

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


# --- identity verification of a site's logged-in users ------------------------
# The site's server signs "<user_id>:<unix seconds>" with the bot's identity secret
# and puts the user id, timestamp and hex HMAC-SHA256 on the widget's script tag
# (data-user-id, data-user-ts, data-user-hash). Only that server knows the secret,
# so a valid hash proves the site vouches for this user id; the timestamp bounds how
# long a leaked hash (a copied page) stays usable.

MAX_USER_ID_LENGTH = 150  # Conversation.visitor_id holds "user:" + this
VERIFIED_PREFIX = "user:"


class IdentityRejected(NotAuthenticated):
    """A wrong, stale or missing identity hash: the socket is told why, then closed."""

    ws_code = "not_authenticated"


def identity_hash_compute(*, secret: str, user_id: str, ts: int | str) -> str:
    """The hex HMAC-SHA256 a site's server puts in data-user-hash."""
    return hmac.new(secret.encode(), f"{user_id}:{ts}".encode(), hashlib.sha256).hexdigest()


def identity_verify(*, bot: Bot, user_id: str, user_hash: str, ts: str, now: float | None = None) -> str:
    """The visitor id of a verified site user ("user:<id>"), or IdentityRejected."""
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise IdentityRejected(f"user_id: a printable string of 1 to {MAX_USER_ID_LENGTH} characters.")
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
        raise IdentityRejected("ts: the hash's timestamp must be whole Unix seconds.")
    now = time.time() if now is None else now
    age = now - int(ts)
    if age > settings.WIDGET_IDENTITY_MAX_AGE_SECONDS:
        raise IdentityRejected("The identity hash has expired; sign a new one.")
    if age < -settings.WIDGET_IDENTITY_CLOCK_SKEW_SECONDS:
        raise IdentityRejected("The identity hash's timestamp is in the future.")
    expected = identity_hash_compute(secret=bot.identity_secret, user_id=user_id, ts=ts)
    # Constant time: a byte-by-byte comparison would leak how much of a guess is right.
    if not hmac.compare_digest(expected.encode(), (user_hash or "").lower().encode()):
        raise IdentityRejected("The identity hash does not match this user id and timestamp.")
    return VERIFIED_PREFIX + user_id


def visitor_is_verified(visitor_id: str | None) -> bool:
    return bool(visitor_id and visitor_id.startswith(VERIFIED_PREFIX))
