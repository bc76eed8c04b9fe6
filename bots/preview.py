"""Signed tokens for the admin's live preview of a bot's widget.

The preview page is served by this server, so its origin is this server's, which
a bot's `allowed_origins` normally does not list. Staff get a short-lived token
bound to one bot; the chat socket and the widget config accept the preview's
origin when the token is valid for that bot and the page's origin is the host the
request was made to (the token cannot open the bot to any other site).
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing

from bots.configuration import normalise_origin
from bots.models import Bot
from chatbase.core.errors import ValidationFailed

_SALT = "chatbase.bots.widget-preview"


def preview_token_issue(*, bot: Bot) -> str:
    # The public key is in the token: rotating the bot's keys voids open previews.
    return signing.dumps({"b": bot.pk, "k": bot.public_key}, salt=_SALT, compress=False)


def preview_token_valid(*, bot: Bot, token: str) -> bool:
    if not token or len(token) > 300:
        return False
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.WIDGET_PREVIEW_TOKEN_MAX_AGE_SECONDS)
    except signing.BadSignature:  # includes SignatureExpired
        return False
    return isinstance(data, dict) and data.get("b") == bot.pk and data.get("k") == bot.public_key


def origin_is_own_host(*, origin: str, host: str) -> bool:
    """Whether a normalised Origin names the host (Host header) the request came to."""
    if not origin or not host or "://" not in origin:
        return False
    scheme = origin.split("://", 1)[0]
    try:
        return normalise_origin(f"{scheme}://{host}") == origin
    except ValidationFailed:
        return False
