"""Validation of a bot's free-form JSON settings: `theme` and `configuration`.

Both are JSON so that owners can set them in one PATCH, but every key is known
and typed here: an unknown key or a wrong type is a 400, not silently stored.
Apps that add bot settings register their keys in CONFIGURATION_KEYS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from chatbase.core.errors import ValidationFailed

_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def _string(max_length: int) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if not isinstance(value, str) or len(value) > max_length:
            raise ValidationFailed(f"{key}: must be a string of at most {max_length} characters.")
        return value

    return check


def _colour(key: str, value: object) -> object:
    if not isinstance(value, str) or not _HEX_COLOUR.match(value):
        raise ValidationFailed(f"{key}: must be a hex colour such as #2563eb.")
    return value


def _choice(*choices: str) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if value not in choices:
            raise ValidationFailed(f"{key}: must be one of {', '.join(choices)}.")
        return value

    return check


def _https_url(key: str, value: object) -> object:
    if value == "":
        return value
    if not isinstance(value, str) or len(value) > 500 or urlsplit(value).scheme not in ("https", "http"):
        raise ValidationFailed(f"{key}: must be an http(s) URL.")
    return value


def _boolean(key: str, value: object) -> object:
    if not isinstance(value, bool):
        raise ValidationFailed(f"{key}: must be true or false.")
    return value


def _int_range(low: int, high: int) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationFailed(f"{key}: must be an integer from {low} to {high}.")
        return value

    return check


def _weights(key: str, value: object) -> object:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and -100 <= v <= 100
        for k, v in value.items()
    ):
        raise ValidationFailed(f"{key}: must map marker names to points between -100 and 100.")
    return value


THEME_KEYS: dict[str, Callable[[str, object], object]] = {
    "color": _colour,
    "position": _choice("right", "left"),
    "title": _string(60),
    "avatar_url": _https_url,
    "launcher_text": _string(40),
}

CONFIGURATION_KEYS: dict[str, Callable[[str, object], object]] = {
    # Ask for name and e-mail before the first message (the widget's pre-chat form).
    "lead_form": _boolean,
    # Geolocate and store contact details only once the visitor consented.
    "require_consent": _boolean,
    # Per-bot overrides of the lead-scoring marker weights.
    "score_weights": _weights,
    # Maximum model tokens this bot may spend per day (0 = no limit).
    "daily_token_budget": _int_range(0, 1_000_000_000),
    # Maximum model tokens one visitor may use per day on this bot (0 = no limit);
    # overrides the VISITOR_DAILY_TOKEN_CAP setting.
    "visitor_daily_token_cap": _int_range(0, 1_000_000_000),
    # Passages retrieved per answer.
    "retrieval_k": _int_range(1, 20),
    # Require the widget's identity verification (data-user-id + data-user-hash).
    "identity_verification": _boolean,
}


def _validate(kind: str, value: object, keys: dict[str, Callable[[str, object], object]]) -> dict:
    if not isinstance(value, dict):
        raise ValidationFailed(f"{kind}: must be a JSON object.")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ValidationFailed(f"{kind}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}.")
    return {key: keys[key](f"{kind}.{key}", item) for key, item in value.items()}


def validate_theme(value: object) -> dict:
    return _validate("theme", value, THEME_KEYS)


def validate_configuration(value: object) -> dict:
    return _validate("configuration", value, CONFIGURATION_KEYS)


def normalise_origin(value: str) -> str:
    """`https://Example.com:443/` -> `https://example.com`; anything but a bare origin is rejected.

    The chat socket compares the browser's Origin header with these exactly, so
    they must be stored in the one form browsers send.
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"allowed_origins: {value!r} is not an origin like https://example.com.")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationFailed(f"allowed_origins: {value!r} must be scheme://host[:port] with no path.")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise ValidationFailed(f"allowed_origins: {value!r} has an invalid port.") from None
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")
