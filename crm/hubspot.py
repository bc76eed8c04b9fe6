"""A small HubSpot CRM v3 client over httpx, and the OAuth token exchange.

Only what ChatBase needs: contacts (batch upsert by e-mail, read, search, update),
notes and deals associated with a contact, and custom contact properties. Errors
come out as two exceptions: :class:`HubSpotRetryable` (429, 5xx, network trouble:
try again later, honouring ``retry_after``) and :class:`HubSpotRejected` (any other
4xx: the request itself is wrong and will not get better by repeating it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

# HubSpot-defined association types (CRM v4 "associationTypeId").
NOTE_TO_CONTACT = 202
DEAL_TO_CONTACT = 3
CONTACT_PROPERTIES = ["email", "firstname", "lastname", "phone", "company"]
NOTE_PROPERTIES = ["hs_note_body", "hs_timestamp"]


class HubSpotError(Exception):
    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class HubSpotRetryable(HubSpotError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message, status=status)


class HubSpotRejected(HubSpotError):
    """A 4xx other than 429: the request will not succeed by repeating it."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # The HTTP-date form.
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict) and body.get("message"):
        return f"HTTP {response.status_code}: {body['message']}"[:2000]
    return f"HTTP {response.status_code}: {response.text[:500]}"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.status_code == 429 or response.status_code >= 500:
        raise HubSpotRetryable(_message(response), status=response.status_code, retry_after=_retry_after(response))
    raise HubSpotRejected(_message(response), status=response.status_code)


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """One pooled client per process: a new one per call would redo TLS set-up and
    the connection handshake every time (measured: ~100 ms per call, bench/crm_sync.py)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = httpx.Client(limits=httpx.Limits(max_connections=20, max_keepalive_connections=10))
    return _client


def _send(method: str, url: str, **kwargs) -> httpx.Response:
    try:
        return _http().request(method, url, timeout=settings.HUBSPOT_TIMEOUT_SECONDS, **kwargs)
    except httpx.HTTPError as exc:
        raise HubSpotRetryable(f"HubSpot could not be reached: {exc.__class__.__name__}: {exc}") from exc


@dataclass
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int


def oauth_token(*, grant: dict) -> TokenGrant:
    """POST /oauth/v1/token (authorization_code or refresh_token grant)."""
    data = {
        "client_id": settings.HUBSPOT_CLIENT_ID,
        "client_secret": settings.HUBSPOT_CLIENT_SECRET,
        **grant,
    }
    response = _send("POST", f"{settings.HUBSPOT_API_BASE.rstrip('/')}/oauth/v1/token", data=data)
    _raise_for(response)
    body = response.json()
    return TokenGrant(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token", ""),
        expires_in=int(body.get("expires_in", 1800)),
    )


def oauth_token_info(*, access_token: str) -> dict:
    """GET /oauth/v1/access-tokens/{token}: the portal (hub_id) and scopes of a token."""
    response = _send("GET", f"{settings.HUBSPOT_API_BASE.rstrip('/')}/oauth/v1/access-tokens/{access_token}")
    _raise_for(response)
    return response.json()


class HubSpotClient:
    def __init__(self, access_token: str, *, base_url: str | None = None):
        self.base_url = (base_url or settings.HUBSPOT_API_BASE).rstrip("/")
        self.headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}

    def request(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None) -> dict:
        response = _send(method, f"{self.base_url}{path}", json=json, params=params, headers=self.headers)
        _raise_for(response)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    # --- account -----------------------------------------------------------
    def account_details(self) -> dict:
        return self.request("GET", "/account-info/v3/details")

    def property_create(self, *, object_type: str, name: str, label: str, type: str, field_type: str) -> bool:
        """Create a custom property; False when it already exists (HubSpot answers 409)."""
        body = {"name": name, "label": label, "type": type, "fieldType": field_type, "groupName": "contactinformation"}
        try:
            self.request("POST", f"/crm/v3/properties/{object_type}", json=body)
        except HubSpotRejected as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # --- contacts ----------------------------------------------------------
    def contact_upsert_by_email(self, *, email: str, properties: dict) -> str:
        """Create or update the contact with this e-mail; its id.

        The batch upsert with idProperty=email is idempotent on HubSpot's side: running
        it twice (a retried task, a worker that died before recording the id) finds the
        contact the first run created instead of making a second one.
        """
        body = {"inputs": [{"idProperty": "email", "id": email, "properties": properties}]}
        result = self.request("POST", "/crm/v3/objects/contacts/batch/upsert", json=body)
        results = result.get("results") or []
        if not results:
            raise HubSpotRetryable(f"HubSpot's upsert answered without a result: {str(result)[:300]}")
        return str(results[0]["id"])

    def contact_update(self, *, contact_id: str, properties: dict) -> dict:
        return self.request("PATCH", f"/crm/v3/objects/contacts/{contact_id}", json={"properties": properties})

    def contact_get(self, *, contact_id: str, properties: list[str] | None = None) -> dict:
        params = {"properties": ",".join(properties or CONTACT_PROPERTIES)}
        return self.request("GET", f"/crm/v3/objects/contacts/{contact_id}", params=params)

    def contact_search(self, *, query: str = "", email: str = "", limit: int = 10) -> list[dict]:
        body: dict = {"limit": limit, "properties": CONTACT_PROPERTIES}
        if email:
            body["filterGroups"] = [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]
        if query:
            body["query"] = query
        return self.request("POST", "/crm/v3/objects/contacts/search", json=body).get("results", [])

    # --- notes -------------------------------------------------------------
    def note_create(self, *, contact_id: str, body: str, timestamp: datetime) -> str:
        payload = {
            "properties": {"hs_note_body": body, "hs_timestamp": timestamp.astimezone(UTC).isoformat()},
            "associations": [
                {
                    "to": {"id": contact_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_CONTACT}],
                }
            ],
        }
        return str(self.request("POST", "/crm/v3/objects/notes", json=payload)["id"])

    def contact_notes(self, *, contact_id: str, limit: int = 20) -> list[dict]:
        """The notes associated with a contact (v4 associations, then one batch read)."""
        associations = self.request(
            "GET", f"/crm/v4/objects/contacts/{contact_id}/associations/notes", params={"limit": 500}
        )
        ids = [str(row["toObjectId"]) for row in associations.get("results", [])][-limit:]
        if not ids:
            return []
        body = {"inputs": [{"id": note_id} for note_id in ids], "properties": NOTE_PROPERTIES}
        return self.request("POST", "/crm/v3/objects/notes/batch/read", json=body).get("results", [])

    # --- deals -------------------------------------------------------------
    def deal_find(self, *, contact_id: str, name: str) -> str | None:
        filters = [
            {"propertyName": "dealname", "operator": "EQ", "value": name},
            {"propertyName": "associations.contact", "operator": "EQ", "value": contact_id},
        ]
        body = {"filterGroups": [{"filters": filters}], "properties": ["dealname"], "limit": 1}
        results = self.request("POST", "/crm/v3/objects/deals/search", json=body).get("results", [])
        return str(results[0]["id"]) if results else None

    def deal_create(self, *, contact_id: str, properties: dict) -> str:
        payload = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": contact_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": DEAL_TO_CONTACT}],
                }
            ],
        }
        return str(self.request("POST", "/crm/v3/objects/deals", json=payload)["id"])
