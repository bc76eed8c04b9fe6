"""CORS of the widget's public endpoints: each bot allows only its own `allowed_origins`.

django-cors-headers serves the owner API with one site-wide list; the widget's
endpoints are excluded from it (CORS_URLS_REGEX) and answered here per bot.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from bots.configuration import normalise_origin
from chatbase.core.errors import ValidationFailed


def request_origin(request: HttpRequest) -> str:
    """The request's Origin in the form allowed_origins are stored in, or ''."""
    raw = request.headers.get("Origin", "")
    if not raw:
        return ""
    try:
        return normalise_origin(raw)
    except ValidationFailed:
        return ""


def cors_allow(response: HttpResponse, *, request: HttpRequest, allowed_origins: list[str]) -> HttpResponse:
    """Let the request's origin read the response if the bot allows it; others get no CORS headers."""
    # Caches must not hand one origin's answer (with its Allow-Origin) to another.
    patch_vary_headers(response, ["Origin"])
    origin = request_origin(request)
    if origin and origin in allowed_origins:
        response["Access-Control-Allow-Origin"] = request.headers["Origin"]
    return response
