"""HTML pages of the widget: the public demo and the staff-only live preview.

Both embed widget.js exactly as a customer's site would, with one script tag, and
are served with a strict Content-Security-Policy (no inline scripts or styles), so
they also show that the widget runs on such sites.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.clickjacking import xframe_options_sameorigin

from bots.demo import demo_bot_get
from bots.models import Bot
from bots.preview import preview_token_issue
from bots.widget import embed_snippet, widget_script_url


def strict_csp(request: HttpRequest, *, frame_ancestors: str) -> str:
    host = request.get_host()
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # Owners' avatar images may live anywhere; answers never load images.
            "img-src 'self' https: data:",
            f"connect-src 'self' ws://{host} wss://{host}",
            f"frame-ancestors {frame_ancestors}",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def demo_view(request: HttpRequest) -> HttpResponse:
    bot = demo_bot_get()
    page_origin = f"{request.scheme}://{request.get_host()}"
    context = {
        "bot": bot,
        "script_url": widget_script_url(request),
        "snippet": embed_snippet(bot, request) if bot else "",
        "page_origin": page_origin,
        "origin_allowed": bool(bot and page_origin in bot.allowed_origins),
        "port": settings.PORT,
    }
    response = render(request, "widget/demo.html", context, status=200 if bot else 404)
    response["Content-Security-Policy"] = strict_csp(request, frame_ancestors="'none'")
    return response


@staff_member_required
@xframe_options_sameorigin
def preview_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    """The admin's live preview (in an iframe on the bot's change page)."""
    bot = get_object_or_404(Bot, pk=bot_id)
    context = {
        "bot": bot,
        "script_url": widget_script_url(request),
        # The preview's own origin is usually not allowed: this token stands in for it.
        "preview_token": preview_token_issue(bot=bot),
    }
    response = render(request, "widget/preview.html", context)
    response["Content-Security-Policy"] = strict_csp(request, frame_ancestors="'self'")
    return response
