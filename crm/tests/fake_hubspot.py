"""A fake HubSpot API on a real local socket: the real client code (httpx) runs against it.

It keeps contacts, notes, deals and their associations in memory, behaves like HubSpot
where ChatBase depends on it (upsert by e-mail never makes a second contact; a
duplicate custom property is a 409), records every request, and lets a test script
responses (``fake.script("POST", "/crm/v3/objects/contacts/batch/upsert", 429,
headers={"Retry-After": "7"})``) that are served before the normal behaviour.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import pytest

from crm.tests.http_fake import Incoming, serve, stop

PORTAL_ID = 4242


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: object
    headers: dict

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class Scripted:
    method: str
    path: str
    status: int
    body: object
    headers: dict


@dataclass
class FakeHubSpot:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    contacts: dict[str, dict] = field(default_factory=dict)
    notes: dict[str, dict] = field(default_factory=dict)
    deals: dict[str, dict] = field(default_factory=dict)
    # (from object type, from id) -> list of (to type, to id)
    associations: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    properties: dict[str, set] = field(default_factory=lambda: {"contacts": set(), "deals": set()})
    tokens: dict[str, dict] = field(default_factory=dict)
    scripted: list[Scripted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1001))

    def script(self, method: str, path: str, status: int, body: object = None, headers: dict | None = None) -> None:
        """Answer the next request to (method, path) with this response instead."""
        self.scripted.append(Scripted(method, path, status, body if body is not None else {}, headers or {}))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)]

    def contact_by_email(self, email: str) -> dict | None:
        return next((c for c in self.contacts.values() if c["properties"].get("email") == email), None)

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        self.associations.setdefault((from_type, from_id), []).append((to_type, to_id))
        self.associations.setdefault((to_type, to_id), []).append((from_type, from_id))

    # --- behaviour ---------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, object, dict]:
        for index, scripted in enumerate(self.scripted):
            if scripted.method == method and scripted.path == path:
                del self.scripted[index]
                return scripted.status, scripted.body, scripted.headers
        parts = path.strip("/").split("/")
        if path == "/oauth/v1/token":
            return self._token(body)
        if path.startswith("/oauth/v1/access-tokens/"):
            info = self.tokens.get(parts[-1])
            return (200, info, {}) if info else (404, {"message": "token not found"}, {})
        if path == "/account-info/v3/details":
            return 200, {"portalId": PORTAL_ID, "timeZone": "UTC"}, {}
        if method == "POST" and len(parts) == 4 and parts[:3] == ["crm", "v3", "properties"]:
            existing = self.properties.setdefault(parts[3], set())
            if body["name"] in existing:
                return 409, {"message": f"Property named '{body['name']}' already exists."}, {}
            existing.add(body["name"])
            return 201, {"name": body["name"]}, {}
        if path == "/crm/v3/objects/contacts/batch/upsert":
            return self._upsert(body)
        if path == "/crm/v3/objects/contacts/search":
            return 200, self._search_contacts(body), {}
        if parts[:4] == ["crm", "v3", "objects", "contacts"] and len(parts) == 5:
            contact = self.contacts.get(parts[4])
            if contact is None:
                return 404, {"message": "resource not found"}, {}
            if method == "PATCH":
                contact["properties"].update(body["properties"])
            return 200, contact, {}
        if path == "/crm/v3/objects/notes" and method == "POST":
            return 201, self._create("notes", self.notes, body), {}
        if path == "/crm/v3/objects/deals" and method == "POST":
            return 201, self._create("deals", self.deals, body), {}
        if path == "/crm/v3/objects/deals/search":
            return 200, self._search_deals(body), {}
        if parts[:4] == ["crm", "v4", "objects", "contacts"] and parts[-1] == "notes":
            linked = [i for kind, i in self.associations.get(("contacts", parts[4]), []) if kind == "notes"]
            return 200, {"results": [{"toObjectId": int(i), "associationTypes": []} for i in linked]}, {}
        if path == "/crm/v3/objects/notes/batch/read":
            found = [self.notes[row["id"]] for row in body["inputs"] if row["id"] in self.notes]
            return 200, {"status": "COMPLETE", "results": found}, {}
        return 404, {"message": f"no route {method} {path}"}, {}

    def _token(self, form: dict) -> tuple[int, object, dict]:
        if form.get("grant_type") not in ("authorization_code", "refresh_token"):
            return 400, {"status": "BAD_GRANT_TYPE", "message": "bad grant"}, {}
        if form.get("grant_type") == "authorization_code" and form.get("code") != "good-code":
            return 400, {"status": "BAD_AUTH_CODE", "message": "auth code not found"}, {}
        token = f"access-{next(self.ids)}"
        self.tokens[token] = {"hub_id": PORTAL_ID, "scopes": ["oauth", "crm.objects.contacts.write"], "token": token}
        return 200, {"access_token": token, "refresh_token": f"refresh-{next(self.ids)}", "expires_in": 1800}, {}

    def _new_id(self) -> str:
        return str(next(self.ids))

    def _upsert(self, body: dict) -> tuple[int, object, dict]:
        results = []
        for row in body["inputs"]:
            assert row["idProperty"] == "email"
            contact = self.contact_by_email(row["id"])
            new = contact is None
            if new:
                contact = {"id": self._new_id(), "properties": {"email": row["id"]}}
                self.contacts[contact["id"]] = contact
            contact["properties"].update(row.get("properties", {}))
            results.append({**contact, "new": new})
        return 200, {"status": "COMPLETE", "results": results}, {}

    def _search_contacts(self, body: dict) -> dict:
        found = list(self.contacts.values())
        for group in body.get("filterGroups", []):
            for f in group["filters"]:
                found = [c for c in found if c["properties"].get(f["propertyName"]) == f["value"]]
        if body.get("query"):
            q = body["query"].lower()
            found = [c for c in found if any(q in str(v).lower() for v in c["properties"].values())]
        found = found[: body.get("limit", 10)]
        return {"total": len(found), "results": found}

    def _create(self, object_type: str, store: dict, body: dict) -> dict:
        obj = {"id": self._new_id(), "properties": dict(body["properties"])}
        store[obj["id"]] = obj
        for association in body.get("associations", []):
            self.associate(object_type, obj["id"], "contacts", str(association["to"]["id"]))
        return obj

    def _search_deals(self, body: dict) -> dict:
        found = list(self.deals.values())
        for f in body["filterGroups"][0]["filters"]:
            if f["propertyName"] == "associations.contact":
                found = [d for d in found if ("contacts", f["value"]) in self.associations.get(("deals", d["id"]), [])]
            else:
                found = [d for d in found if d["properties"].get(f["propertyName"]) == f["value"]]
        return {"total": len(found), "results": found[: body.get("limit", 10)]}


def _respond(fake: FakeHubSpot):
    def respond(incoming: Incoming) -> tuple[int, object, dict]:
        with fake.lock:
            fake.requests.append(
                Recorded(incoming.method, incoming.path, incoming.query, incoming.body, incoming.headers)
            )
            return fake.handle(incoming.method, incoming.path, incoming.query, incoming.body)

    return respond


@pytest.fixture
def fake_hubspot(settings):
    """A running fake HubSpot; HUBSPOT_API_BASE points at it and a private-app token is set."""
    fake = FakeHubSpot()
    server, fake.url = serve(_respond(fake))
    settings.HUBSPOT_API_BASE = fake.url
    settings.HUBSPOT_ACCESS_TOKEN = "pat-test-token"
    yield fake
    stop(server)
