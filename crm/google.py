"""Google: verifying Pub/Sub push tokens, and the few Gmail and Calendar calls we make.

Pub/Sub signs each push with an OIDC token (a JWT, RS256) of the subscription's
service account; we check the signature against Google's published keys (JWKS,
fetched with httpx and cached), the audience, the e-mail and that it is verified.
"""

from __future__ import annotations

import base64
import logging
from datetime import timedelta

import httpx
import jwt
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

logger = logging.getLogger(__name__)
GOOGLE_ISSUERS = ["https://accounts.google.com", "accounts.google.com"]
_JWKS_CACHE_KEY = "crm:google-jwks"


class TokenInvalid(Exception):
    pass


class GoogleError(Exception):
    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


def _fetch_jwks() -> dict:
    try:
        response = httpx.get(settings.GOOGLE_OIDC_JWKS_URL, timeout=settings.GOOGLE_TIMEOUT_SECONDS)
        response.raise_for_status()
        keys = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise TokenInvalid(f"Google's signing keys could not be fetched: {exc.__class__.__name__}") from exc
    cache.set(_JWKS_CACHE_KEY, keys, settings.GOOGLE_JWKS_CACHE_SECONDS)
    return keys


def _signing_key(kid: str | None):
    keys = cache.get(_JWKS_CACHE_KEY) or _fetch_jwks()
    for refreshed in (False, True):
        for entry in keys.get("keys", []):
            if entry.get("kid") == kid:
                return jwt.PyJWK(entry).key
        if refreshed:
            break
        # Google rotates its keys: an unknown kid may be a new key, so look once more.
        keys = _fetch_jwks()
    raise TokenInvalid("The token is signed with an unknown key.")


def verify_pubsub_token(authorization: str | None) -> dict:
    """The claims of a valid Pub/Sub push token, or TokenInvalid saying why not."""
    if not settings.GOOGLE_PUBSUB_AUDIENCE or not settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT:
        raise TokenInvalid("Gmail push is not configured (GOOGLE_PUBSUB_AUDIENCE, GOOGLE_PUBSUB_SERVICE_ACCOUNT).")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise TokenInvalid("A bearer token is required.")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token,
            _signing_key(header.get("kid")),
            algorithms=["RS256"],
            audience=settings.GOOGLE_PUBSUB_AUDIENCE,
            issuer=GOOGLE_ISSUERS,
            options={"require": ["exp", "iat", "aud", "iss"]},
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"The token is invalid: {exc}") from exc
    if claims.get("email") != settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT:
        raise TokenInvalid("The token is not from the configured service account.")
    if claims.get("email_verified") is not True:
        raise TokenInvalid("The token's e-mail is not verified.")
    return claims


# --- the owner's Google account (django-allauth) ------------------------------------


def access_token_for(owner) -> str:
    """A valid access token of the owner's connected Google account, refreshed when due."""
    from allauth.socialaccount.models import SocialToken

    token = SocialToken.objects.select_related("app").filter(account__user=owner, account__provider="google").first()
    if token is None:
        raise GoogleError("No Google account is connected for this owner.")
    if token.expires_at and token.expires_at - timedelta(minutes=2) > timezone.now():
        return token.token
    if not token.token_secret:
        if token.expires_at is None:
            return token.token
        raise GoogleError("The Google token expired and there is no refresh token (offline access).")
    client_id = token.app.client_id if token.app else settings.GOOGLE_CLIENT_ID
    secret = token.app.secret if token.app else settings.GOOGLE_CLIENT_SECRET
    data = {"grant_type": "refresh_token", "refresh_token": token.token_secret, "client_id": client_id}
    data["client_secret"] = secret
    try:
        response = httpx.post(settings.GOOGLE_TOKEN_URL, data=data, timeout=settings.GOOGLE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise GoogleError(f"Google could not be reached: {exc.__class__.__name__}") from exc
    if response.status_code != 200:
        raise GoogleError(f"Google refused the token refresh: HTTP {response.status_code}", status=response.status_code)
    body = response.json()
    token.token = body["access_token"]
    token.expires_at = timezone.now() + timedelta(seconds=int(body.get("expires_in", 3600)))
    token.save(update_fields=["token", "expires_at"])
    return token.token


def _call(method: str, url: str, access_token: str, params: dict | None = None, json: dict | None = None) -> dict:
    try:
        response = httpx.request(
            method,
            url,
            params=params,
            json=json,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=settings.GOOGLE_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        raise GoogleError(f"Google could not be reached: {exc.__class__.__name__}") from exc
    if response.status_code >= 400:
        raise GoogleError(
            f"Google answered HTTP {response.status_code}: {response.text[:300]}", status=response.status_code
        )
    return response.json()


def _get(url: str, access_token: str, params: dict | None = None) -> dict:
    return _call("GET", url, access_token, params=params)


def gmail_watch(access_token: str, *, topic: str) -> dict:
    """users.watch: Gmail publishes the mailbox's changes to the Pub/Sub topic (for 7 days)."""
    base = f"{settings.GMAIL_API_BASE.rstrip('/')}/gmail/v1/users/me"
    profile = _get(f"{base}/profile", access_token)
    watch = _call("POST", f"{base}/watch", access_token, json={"topicName": topic, "labelIds": ["INBOX"]})
    return {"emailAddress": profile["emailAddress"], "historyId": str(watch["historyId"])}


def calendar_watch(access_token: str, *, calendar_id: str, channel_id: str, address: str, token: str) -> dict:
    """events.watch: Google Calendar posts to `address` with our channel token on every change."""
    url = f"{settings.GOOGLE_CALENDAR_API_BASE.rstrip('/')}/calendar/v3/calendars/{calendar_id}/events/watch"
    body = {"id": channel_id, "type": "web_hook", "address": address, "token": token}
    return _call("POST", url, access_token, json=body)


# --- Gmail --------------------------------------------------------------------------


def gmail_added_message_ids(access_token: str, *, start_history_id: str) -> tuple[list[str], str]:
    """Ids of the messages added since a history id, and the newest history id."""
    base = f"{settings.GMAIL_API_BASE.rstrip('/')}/gmail/v1/users/me"
    ids: list[str] = []
    params = {"startHistoryId": start_history_id, "historyTypes": "messageAdded"}
    latest = start_history_id
    while True:
        page = _get(f"{base}/history", access_token, params)
        for record in page.get("history", []):
            for added in record.get("messagesAdded", []):
                message_id = added.get("message", {}).get("id")
                if message_id and message_id not in ids:
                    ids.append(message_id)
        latest = str(page.get("historyId", latest))
        if not page.get("nextPageToken"):
            return ids, latest
        params = {**params, "pageToken": page["nextPageToken"]}


def _plain_text(part: dict) -> str:
    if part.get("mimeType") == "text/plain" and part.get("body", {}).get("data"):
        data = part["body"]["data"]
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8", errors="replace")
    return "\n".join(filter(None, (_plain_text(child) for child in part.get("parts", []))))


def gmail_message(access_token: str, message_id: str) -> dict:
    """{"id", "subject", "from", "date", "text"} of one message (its text/plain parts)."""
    base = f"{settings.GMAIL_API_BASE.rstrip('/')}/gmail/v1/users/me"
    message = _get(f"{base}/messages/{message_id}", access_token, {"format": "full"})
    payload = message.get("payload", {})
    headers = {h["name"].lower(): h["value"] for h in payload.get("headers", [])}
    return {
        "id": message["id"],
        "subject": headers.get("subject", "(no subject)"),
        "from": headers.get("from", ""),
        "date": headers.get("date", ""),
        "text": _plain_text(payload) or message.get("snippet", ""),
    }


# --- Calendar -----------------------------------------------------------------------


def calendar_changed_events(access_token: str, *, calendar_id: str, sync_token: str) -> tuple[list[dict], str]:
    """Events changed since the sync token (all upcoming ones without one), and the next token.

    A 410 means Google forgot the token: the caller starts over without one.
    """
    url = f"{settings.GOOGLE_CALENDAR_API_BASE.rstrip('/')}/calendar/v3/calendars/{calendar_id}/events"
    params: dict = {"syncToken": sync_token} if sync_token else {"timeMin": timezone.now().isoformat()}
    events: list[dict] = []
    while True:
        page = _get(url, access_token, params)
        events.extend(page.get("items", []))
        if page.get("nextPageToken"):
            params = {**params, "pageToken": page["nextPageToken"]}
            continue
        return events, page.get("nextSyncToken", sync_token)
