"""What the embeddable widget learns of a bot before it opens a socket.

`GET /api/v1/widget/{public_key}/config/` is public and called on every page view
of every site that embeds a bot, so its answer is cached per public key (misses
too, briefly) and dropped when the bot changes.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.templatetags.static import static

from bots import selectors
from bots.models import Bot

THEME_DEFAULTS = {"color": "#2563eb", "position": "right", "title": "", "avatar_url": "", "launcher_text": ""}
MAX_PUBLIC_KEY_LENGTH = Bot._meta.get_field("public_key").max_length
# Unknown keys are remembered for less time: a bot created a moment later must work.
MISS_CACHE_SECONDS = 30


def _cache_key(public_key: str) -> str:
    return f"widget-config:{public_key}"


def widget_config_build(*, bot: Bot) -> dict:
    theme = THEME_DEFAULTS | bot.theme
    return {
        "public_key": bot.public_key,
        "name": bot.name,
        "title": theme["title"] or bot.name,
        "welcome": bot.welcome_message,
        "suggestions": bot.suggestions,
        "theme": theme,
        "lead_form": bool(bot.configuration.get("lead_form", False)),
        # The lead form then asks for consent (contact details are kept only with it).
        "require_consent": bool(bot.configuration.get("require_consent", False)),
        "identity_required": bool(bot.configuration.get("identity_verification", False)),
    }


def widget_config_get(*, public_key: str) -> tuple[dict, list[str]] | None:
    """(public config, allowed origins) of an active bot, or None."""
    if not public_key or len(public_key) > MAX_PUBLIC_KEY_LENGTH:
        return None
    key = _cache_key(public_key)
    cached = cache.get(key)
    if cached is None:
        bot = selectors.bot_get_by_public_key(public_key=public_key)
        if bot is None or not bot.is_active:
            cached = {"missing": True}
            cache.set(key, cached, timeout=MISS_CACHE_SECONDS)
        else:
            cached = {"config": widget_config_build(bot=bot), "origins": list(bot.allowed_origins)}
            cache.set(key, cached, timeout=settings.WIDGET_CONFIG_CACHE_SECONDS)
    if cached.get("missing"):
        return None
    return cached["config"], cached["origins"]


def widget_config_forget(*, public_key: str) -> None:
    cache.delete(_cache_key(public_key))


def widget_script_url(request: HttpRequest) -> str:
    return request.build_absolute_uri(static("widget/widget.js"))


def embed_snippet(bot: Bot, request: HttpRequest) -> str:
    """The one line a site adds to its pages."""
    return f'<script src="{widget_script_url(request)}" data-bot="{bot.public_key}" defer></script>'
