"""HubSpot connections: which token an owner's sync uses, OAuth, token refresh."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from chatbase.core.errors import Conflict, NotAuthenticated, Unavailable, ValidationFailed
from crm import hubspot
from crm.models import HubSpotConnection

# An access token this close to its expiry is refreshed before use.
REFRESH_MARGIN = timedelta(minutes=5)
_STATE_SALT = "crm.hubspot.oauth-state"
STATE_MAX_AGE_SECONDS = 600


class HubSpotNotConnected(Exception):
    """The owner has no usable HubSpot connection (nothing configured, or disconnected)."""


def hubspot_enabled_for(*, owner_id: int) -> bool:
    if settings.HUBSPOT_ACCESS_TOKEN:
        return True
    return HubSpotConnection.objects.filter(owner_id=owner_id, status=HubSpotConnection.Status.CONNECTED).exists()


def hubspot_connection_ensure(*, owner) -> HubSpotConnection:
    """The owner's connection row; with HUBSPOT_ACCESS_TOKEN set one is made on first use."""
    connection = HubSpotConnection.objects.filter(owner=owner).first()
    if connection is not None:
        return connection
    if not settings.HUBSPOT_ACCESS_TOKEN:
        raise HubSpotNotConnected("HubSpot is not connected for this owner.")
    connection, _ = HubSpotConnection.objects.get_or_create(
        owner=owner, defaults={"auth_type": HubSpotConnection.AuthType.PRIVATE_APP}
    )
    return connection


class _RefreshRefused(Exception):
    pass


@transaction.atomic
def _refresh(connection_id: int) -> HubSpotConnection:
    # Row lock: two workers refreshing at once would each get a new refresh token and
    # one of them would store a token HubSpot already replaced.
    connection = HubSpotConnection.objects.select_for_update().get(pk=connection_id)
    if connection.expires_at and connection.expires_at - REFRESH_MARGIN > timezone.now():
        return connection
    if not connection.refresh_token:
        raise HubSpotNotConnected("The HubSpot OAuth connection has no refresh token; connect again.")
    try:
        grant = hubspot.oauth_token(grant={"grant_type": "refresh_token", "refresh_token": connection.refresh_token})
    except hubspot.HubSpotRejected as exc:
        raise _RefreshRefused(f"Token refresh refused: {exc}") from exc
    connection.access_token = grant.access_token
    connection.refresh_token = grant.refresh_token or connection.refresh_token
    connection.expires_at = timezone.now() + timedelta(seconds=grant.expires_in)
    connection.status = HubSpotConnection.Status.CONNECTED
    connection.last_error = ""
    connection.save(update_fields=["access_token", "refresh_token", "expires_at", "status", "last_error", "updated_at"])
    return connection


def hubspot_access_token(*, connection: HubSpotConnection) -> str:
    if settings.HUBSPOT_ACCESS_TOKEN:
        return settings.HUBSPOT_ACCESS_TOKEN
    if connection.status == HubSpotConnection.Status.DISCONNECTED:
        raise HubSpotNotConnected("The HubSpot connection was disconnected.")
    if connection.auth_type == HubSpotConnection.AuthType.OAUTH and (
        connection.expires_at is None or connection.expires_at - REFRESH_MARGIN <= timezone.now()
    ):
        try:
            connection = _refresh(connection.pk)
        except _RefreshRefused as exc:
            # Recorded outside the refresh's transaction, which the refusal rolled back.
            hubspot_connection_record_error(
                connection=connection, error=str(exc), status=HubSpotConnection.Status.ERROR
            )
            raise HubSpotNotConnected(str(exc)) from exc
    if not connection.access_token:
        raise HubSpotNotConnected("The HubSpot connection has no access token.")
    return connection.access_token


def hubspot_client_for(*, owner) -> hubspot.HubSpotClient:
    connection = hubspot_connection_ensure(owner=owner)
    client = hubspot.HubSpotClient(hubspot_access_token(connection=connection))
    if not connection.properties_ready:
        hubspot_properties_ensure(connection=connection, client=client)
    return client


def hubspot_properties_ensure(*, connection: HubSpotConnection, client: hubspot.HubSpotClient) -> None:
    """Create the custom contact properties the sync writes (once per connection)."""
    for name, label, kind, field_type in (
        (settings.HUBSPOT_SCORE_PROPERTY, "ChatBase lead score", "number", "number"),
        (settings.HUBSPOT_AREA_PROPERTY, "ChatBase nearest service area", "string", "text"),
    ):
        client.property_create(object_type="contacts", name=name, label=label, type=kind, field_type=field_type)
    update = ["properties_ready", "updated_at"]
    connection.properties_ready = True
    if not connection.portal_id:
        details = client.account_details()
        connection.portal_id = str(details.get("portalId", ""))
        update.append("portal_id")
    connection.save(update_fields=update)


@transaction.atomic
def hubspot_connection_record_error(*, connection: HubSpotConnection, error: str, status: str | None = None) -> None:
    connection.last_error = error[:2000]
    connection.status = status or connection.status
    connection.save(update_fields=["last_error", "status", "updated_at"])


# --- OAuth ----------------------------------------------------------------------


def hubspot_oauth_authorize_url(*, owner) -> str:
    """Where to send the owner's browser; the state binds the callback to this owner, once."""
    if not (settings.HUBSPOT_CLIENT_ID and settings.HUBSPOT_CLIENT_SECRET and settings.HUBSPOT_OAUTH_REDIRECT_URI):
        # 409, not 503: nothing is down and retrying will not help until an operator
        # configures it (503 would also page whoever watches 5xx rates).
        raise Conflict(
            "HubSpot OAuth is not configured (HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET, HUBSPOT_OAUTH_REDIRECT_URI).",
            code="hubspot_oauth_not_configured",
        )
    nonce = secrets.token_urlsafe(16)
    cache.set(f"crm:hubspot-oauth-state:{nonce}", owner.pk, STATE_MAX_AGE_SECONDS)
    state = signing.dumps({"owner": owner.pk, "nonce": nonce}, salt=_STATE_SALT)
    query = urlencode(
        {
            "client_id": settings.HUBSPOT_CLIENT_ID,
            "redirect_uri": settings.HUBSPOT_OAUTH_REDIRECT_URI,
            "scope": " ".join(settings.HUBSPOT_OAUTH_SCOPES),
            "state": state,
        }
    )
    return f"{settings.HUBSPOT_OAUTH_AUTHORIZE_URL}?{query}"


def _owner_id_from_state(state: str) -> int:
    try:
        data = signing.loads(state, salt=_STATE_SALT, max_age=STATE_MAX_AGE_SECONDS)
    except signing.BadSignature as exc:
        raise NotAuthenticated("The OAuth state is invalid or expired.", code="invalid_state") from exc
    # One use only: a state seen in a log or a browser history cannot connect again.
    if cache.get(f"crm:hubspot-oauth-state:{data['nonce']}") != data["owner"]:
        raise NotAuthenticated("The OAuth state was already used or has expired.", code="invalid_state")
    cache.delete(f"crm:hubspot-oauth-state:{data['nonce']}")
    return data["owner"]


def hubspot_oauth_connect(*, state: str, code: str) -> HubSpotConnection:
    """The OAuth callback: check the state, exchange the code, store the tokens encrypted."""
    owner_id = _owner_id_from_state(state)
    if not code:
        raise ValidationFailed("The callback has no authorisation code.", code="missing_code")
    try:
        redirect_uri = settings.HUBSPOT_OAUTH_REDIRECT_URI
        grant = hubspot.oauth_token(
            grant={"grant_type": "authorization_code", "redirect_uri": redirect_uri, "code": code}
        )
        info = hubspot.oauth_token_info(access_token=grant.access_token)
    except hubspot.HubSpotRejected as exc:
        raise ValidationFailed(f"HubSpot refused the authorisation: {exc}", code="hubspot_refused") from exc
    except hubspot.HubSpotRetryable as exc:
        raise Unavailable(f"HubSpot could not be reached: {exc}") from exc
    with transaction.atomic():
        connection, _ = HubSpotConnection.objects.select_for_update().get_or_create(owner_id=owner_id)
        connection.auth_type = HubSpotConnection.AuthType.OAUTH
        connection.access_token = grant.access_token
        connection.refresh_token = grant.refresh_token
        connection.expires_at = timezone.now() + timedelta(seconds=grant.expires_in)
        connection.portal_id = str(info.get("hub_id", ""))
        connection.scopes = list(info.get("scopes", []))
        connection.status = HubSpotConnection.Status.CONNECTED
        connection.last_error = ""
        connection.properties_ready = False
        connection.save()
    return connection


@transaction.atomic
def hubspot_connection_disconnect(*, connection: HubSpotConnection) -> None:
    connection.access_token = ""
    connection.refresh_token = ""
    connection.status = HubSpotConnection.Status.DISCONNECTED
    connection.save(update_fields=["access_token", "refresh_token", "status", "updated_at"])
