"""Verification of HubSpot's webhook signature, version 3.

HubSpot signs ``method + URI + body + timestamp`` with HMAC-SHA256 keyed by the app's
client secret and sends it base64-encoded in ``X-HubSpot-Signature-v3``, with the
timestamp (milliseconds) in ``X-HubSpot-Request-Timestamp``. Versions 1 and 2 (a
plain SHA-256 with the secret inside, no timestamp, so replayable forever) are
refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from django.http import HttpRequest

# HubSpot signs the URI with these characters decoded (its validation guide lists them).
_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ENCODED = re.compile("|".join(_DECODED), re.IGNORECASE)


class SignatureInvalid(Exception):
    """Why a request was refused (shown to the caller; it reveals nothing secret)."""


def signed_uri(request: HttpRequest) -> str:
    """The URI HubSpot signed, as HubSpot called it.

    ``build_absolute_uri`` gives the scheme and host the client used: behind a TLS
    proxy it says https only when SECURE_PROXY_SSL_HEADER says so (and the host comes
    from X-Forwarded-Host only with USE_X_FORWARDED_HOST), i.e. exactly as far as the
    deployment trusts its proxy, never from a header any client can send.
    """
    uri = request.build_absolute_uri()
    return _ENCODED.sub(lambda match: _DECODED[match.group(0).upper()], uri)


def hubspot_v3_signature(*, secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(
    *,
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    max_age_seconds: int,
    max_future_seconds: int,
    now: float | None = None,
) -> None:
    """Raise SignatureInvalid unless the v3 signature and its timestamp are good."""
    if not secret:
        raise SignatureInvalid("HubSpot webhooks are not configured (HUBSPOT_CLIENT_SECRET).")
    if not signature:
        raise SignatureInvalid("The X-HubSpot-Signature-v3 header is missing; only signature v3 is accepted.")
    if not timestamp:
        raise SignatureInvalid("The X-HubSpot-Request-Timestamp header is missing.")
    try:
        sent_ms = int(timestamp)
    except ValueError as exc:
        raise SignatureInvalid("The X-HubSpot-Request-Timestamp header is not a number.") from exc
    now_ms = (time.time() if now is None else now) * 1000
    if now_ms - sent_ms > max_age_seconds * 1000:
        raise SignatureInvalid("The request timestamp is too old.")
    if sent_ms - now_ms > max_future_seconds * 1000:
        raise SignatureInvalid("The request timestamp is in the future.")
    expected = hubspot_v3_signature(secret=secret, method=method, uri=uri, body=body, timestamp=timestamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureInvalid("The signature does not match.")
