"""A fake Google on a local socket: JWKS with a locally generated RSA key, OAuth token
refresh, Gmail history/messages and Calendar events. Tests sign Pub/Sub tokens with
the private key (``fake.pubsub_token(...)``) and script mailboxes and calendars.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from crm.tests.http_fake import Incoming, serve, stop

AUDIENCE = "https://chatbase.example/api/v1/webhooks/gmail/"
SERVICE_ACCOUNT = "gmail-push@chatbase-project.iam.gserviceaccount.com"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class FakeGoogle:
    url: str = ""
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = "test-key-1"
    jwks_fetches: int = 0
    requests: list[Incoming] = field(default_factory=list)
    # Gmail: history records after a start id -> messages; messages by id.
    history: list[dict] = field(default_factory=list)
    history_id: str = "200"
    messages: dict[str, dict] = field(default_factory=dict)
    # Calendar: what the next events list returns, and the 410 switch.
    calendar_items: list[dict] = field(default_factory=list)
    calendar_sync_token_gone: bool = False
    # path -> statuses to answer its next requests with
    fail_next: dict[str, list[int]] = field(default_factory=dict)

    def jwks(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": _b64url(numbers.e.to_bytes(3, "big")),
                }
            ]
        }

    def pubsub_token(self, *, key=None, kid=None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": SERVICE_ACCOUNT,
            "email_verified": True,
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def add_message(self, message_id: str, *, subject: str, text: str, sender: str = "ana@example.com") -> None:
        body = base64.urlsafe_b64encode(text.encode()).decode()
        self.messages[message_id] = {
            "id": message_id,
            "snippet": text[:50],
            "payload": {
                "mimeType": "multipart/alternative",
                "headers": [
                    {"name": "Subject", "value": subject},
                    {"name": "From", "value": sender},
                    {"name": "Date", "value": "Mon, 2 Jun 2025 10:00:00 +0000"},
                ],
                "parts": [
                    {"mimeType": "text/plain", "body": {"data": body}},
                    {"mimeType": "text/html", "body": {"data": base64.urlsafe_b64encode(b"<p>x</p>").decode()}},
                ],
            },
        }
        self.history.append({"id": str(int(self.history_id) + 1), "messagesAdded": [{"message": {"id": message_id}}]})
        self.history_id = str(int(self.history_id) + 1)

    def handle(self, path: str, query: dict, body: dict) -> tuple[int, object]:
        if self.fail_next.get(path):
            return self.fail_next[path].pop(0), {"error": {"message": "scripted failure"}}
        if path == "/oauth2/v3/certs":
            self.jwks_fetches += 1
            return 200, self.jwks()
        if path == "/token":
            return 200, {"access_token": f"refreshed-{body.get('refresh_token')}", "expires_in": 3600}
        if path == "/gmail/v1/users/me/profile":
            return 200, {"emailAddress": "owner@example.com", "historyId": self.history_id}
        if path == "/gmail/v1/users/me/watch":
            return 200, {"historyId": self.history_id, "expiration": "1900000000000"}
        if path.endswith("/events/watch"):
            return 200, {"kind": "api#channel", "id": body["id"], "resourceId": "res-watched", "token": body["token"]}
        if path == "/gmail/v1/users/me/history":
            start = int(query["startHistoryId"])
            return 200, {"history": [h for h in self.history if int(h["id"]) > start], "historyId": self.history_id}
        if path.startswith("/gmail/v1/users/me/messages/"):
            message = self.messages.get(path.rsplit("/", 1)[1])
            return (200, message) if message else (404, {"error": {"message": "not found"}})
        if path.startswith("/calendar/v3/calendars/") and path.endswith("/events"):
            if "syncToken" in query and self.calendar_sync_token_gone:
                self.calendar_sync_token_gone = False
                return 410, {"error": {"message": "Sync token is no longer valid"}}
            return 200, {"items": self.calendar_items, "nextSyncToken": f"sync-{len(self.requests)}"}
        return 404, {"error": {"message": f"no route {path}"}}


def _respond(fake: FakeGoogle):
    def respond(incoming: Incoming) -> tuple[int, object, dict]:
        fake.requests.append(incoming)
        status, payload = fake.handle(incoming.path, incoming.query, incoming.body or {})
        return status, payload, {}

    return respond


@pytest.fixture
def fake_google(settings):
    fake = FakeGoogle()
    server, fake.url = serve(_respond(fake))
    settings.GOOGLE_OIDC_JWKS_URL = f"{fake.url}/oauth2/v3/certs"
    settings.GOOGLE_TOKEN_URL = f"{fake.url}/token"
    settings.GMAIL_API_BASE = fake.url
    settings.GOOGLE_CALENDAR_API_BASE = fake.url
    settings.GOOGLE_PUBSUB_AUDIENCE = AUDIENCE
    settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT = SERVICE_ACCOUNT
    yield fake
    stop(server)
