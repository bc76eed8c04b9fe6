from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection as db
from django.utils import timezone

from crm.models import HubSpotConnection
from crm.services.hubspot import HubSpotNotConnected, hubspot_client_for, hubspot_enabled_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def oauth(settings, fake_hubspot):
    settings.HUBSPOT_ACCESS_TOKEN = ""
    settings.HUBSPOT_CLIENT_ID = "client-id"
    settings.HUBSPOT_CLIENT_SECRET = "client-secret"
    settings.HUBSPOT_OAUTH_REDIRECT_URI = "https://chatbase.example/api/v1/crm/hubspot/oauth/callback/"
    return fake_hubspot


def test_tokens_are_unreadable_in_the_database(owner):
    HubSpotConnection.objects.create(owner=owner, access_token="at-plain-123", refresh_token="rt-plain-456")
    with db.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM crm_hubspotconnection")
        stored = cursor.fetchone()
    assert "at-plain-123" not in stored[0] and "rt-plain-456" not in stored[1]
    again = HubSpotConnection.objects.get()
    assert (again.access_token, again.refresh_token) == ("at-plain-123", "rt-plain-456")


def test_the_key_can_come_from_field_encryption_key_and_old_secret_keys_still_decrypt(owner, settings):
    HubSpotConnection.objects.create(owner=owner, access_token="at-1")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-after-rotation-0123456789"
    assert HubSpotConnection.objects.get().access_token == "at-1"
    settings.FIELD_ENCRYPTION_KEY = "dedicated"
    with pytest.raises(ValueError):
        HubSpotConnection.objects.get()


def test_oauth_authorise_then_callback_stores_the_connection(owner_client, oauth, client):
    response = owner_client.get("/api/v1/crm/hubspot/oauth/authorize/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert location.netloc == "app.hubspot.com"
    assert query["client_id"] == ["client-id"]
    assert query["redirect_uri"] == ["https://chatbase.example/api/v1/crm/hubspot/oauth/callback/"]
    assert "crm.objects.contacts.write" in query["scope"][0].split()
    state = query["state"][0]

    callback = client.get("/api/v1/crm/hubspot/oauth/callback/", {"code": "good-code", "state": state})
    assert callback.status_code == 200, callback.content
    assert callback.json()["status"] == "connected" and callback.json()["portal_id"] == "4242"
    stored = HubSpotConnection.objects.get(owner=owner_client.user)
    assert stored.auth_type == "oauth" and stored.access_token.startswith("access-")
    assert stored.expires_at > timezone.now() + timedelta(minutes=25)
    exchange = oauth.calls("POST", "/oauth/v1/token")[0].body
    assert exchange == {
        "client_id": "client-id",
        "client_secret": "client-secret",
        "grant_type": "authorization_code",
        "redirect_uri": "https://chatbase.example/api/v1/crm/hubspot/oauth/callback/",
        "code": "good-code",
    }
    # A state works once.
    again = client.get("/api/v1/crm/hubspot/oauth/callback/", {"code": "good-code", "state": state})
    assert again.status_code == 401 and again.json()["code"] == "invalid_state"


def test_a_forged_or_missing_state_is_refused(oauth, client):
    for params in ({"code": "good-code", "state": "forged"}, {"code": "good-code"}):
        response = client.get("/api/v1/crm/hubspot/oauth/callback/", params)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_state"
    assert not HubSpotConnection.objects.exists()
    assert oauth.calls("POST", "/oauth/v1/token") == []


def test_a_refused_code_is_a_400(owner_client, oauth, client):
    state = parse_qs(urlsplit(owner_client.get("/api/v1/crm/hubspot/oauth/authorize/")["Location"]).query)["state"][0]
    response = client.get("/api/v1/crm/hubspot/oauth/callback/", {"code": "bad", "state": state})
    assert response.status_code == 400 and response.json()["code"] == "hubspot_refused"
    assert not HubSpotConnection.objects.exists()


def test_authorise_without_oauth_configured_is_409(owner_client, settings):
    settings.HUBSPOT_CLIENT_ID = ""
    response = owner_client.get("/api/v1/crm/hubspot/oauth/authorize/")
    assert response.status_code == 409 and response.json()["code"] == "hubspot_oauth_not_configured"


def test_an_expiring_token_is_refreshed_before_use(owner, oauth):
    HubSpotConnection.objects.create(
        owner=owner,
        auth_type="oauth",
        access_token="old-access",
        refresh_token="the-refresh",
        expires_at=timezone.now() + timedelta(minutes=2),
        properties_ready=True,
    )
    client = hubspot_client_for(owner=owner)
    client.contact_search(email="a@example.com")
    refresh = oauth.calls("POST", "/oauth/v1/token")
    assert [r.body["grant_type"] for r in refresh] == ["refresh_token"]
    assert refresh[0].body["refresh_token"] == "the-refresh"
    stored = HubSpotConnection.objects.get()
    assert stored.access_token != "old-access" and stored.refresh_token.startswith("refresh-")
    search = oauth.calls("POST", "/crm/v3/objects/contacts/search")[0]
    assert search.authorization == f"Bearer {stored.access_token}"


def test_a_refused_refresh_marks_the_connection_in_error(owner, oauth):
    HubSpotConnection.objects.create(
        owner=owner, auth_type="oauth", access_token="a", refresh_token="r", expires_at=timezone.now()
    )
    oauth.script("POST", "/oauth/v1/token", 400, {"message": "refresh token revoked"})
    with pytest.raises(HubSpotNotConnected):
        hubspot_client_for(owner=owner)
    stored = HubSpotConnection.objects.get()
    assert stored.status == "error" and "revoked" in stored.last_error


def test_the_private_app_token_serves_every_owner_and_creates_the_properties_once(owner, other_owner, fake_hubspot):
    assert hubspot_enabled_for(owner_id=owner.pk)
    hubspot_client_for(owner=owner).contact_search(email="x@example.com")
    hubspot_client_for(owner=owner)
    hubspot_client_for(owner=other_owner)
    creates = fake_hubspot.calls("POST", "/crm/v3/properties/contacts")
    # Once per connection; the second owner's attempt finds them there (409).
    assert [r.body["name"] for r in creates] == ["chatbase_score", "chatbase_nearest_area"] * 2
    assert all(r.authorization == "Bearer pat-test-token" for r in fake_hubspot.requests)
    assert set(HubSpotConnection.objects.values_list("portal_id", "properties_ready")) == {("4242", True)}


def test_without_anything_configured_hubspot_is_disabled(owner, settings):
    settings.HUBSPOT_ACCESS_TOKEN = ""
    assert not hubspot_enabled_for(owner_id=owner.pk)
    with pytest.raises(HubSpotNotConnected):
        hubspot_client_for(owner=owner)
