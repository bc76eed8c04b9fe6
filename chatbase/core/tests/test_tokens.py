import pytest
from django.core.management import call_command

from chatbase.core.models import ApiToken, User

pytestmark = pytest.mark.django_db


def test_create_api_token_command_creates_owner_and_a_working_token(api_client, capsys):
    call_command("create_api_token", "new.owner@example.com")
    raw = capsys.readouterr().out.strip()
    assert raw.startswith("cb_")
    assert User.objects.filter(email="new.owner@example.com").exists()
    # Only the hash is stored.
    assert not ApiToken.objects.filter(key_hash=raw).exists()

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["email"] == "new.owner@example.com"


def test_create_api_token_rejects_a_bad_email():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("create_api_token", "not-an-email")


def test_token_api_create_list_revoke(owner_client, api_client):
    created = owner_client.post("/api/v1/tokens/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    raw = created.json()["token"]

    listing = owner_client.get("/api/v1/tokens/").json()
    assert set(listing) == {"count", "next", "previous", "results"}
    assert "token" not in listing["results"][0]
    assert {t["name"] for t in listing["results"]} == {"test", "ci"}

    assert owner_client.delete(f"/api/v1/tokens/{created.json()['id']}/").status_code == 204
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/me/").status_code == 401


def test_another_owners_token_is_404(owner_client, other_owner):
    from chatbase.core.services import api_token_create

    token, _ = api_token_create(user=other_owner)
    assert owner_client.delete(f"/api/v1/tokens/{token.id}/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_session_login_works_for_the_api(client, owner):
    from chatbase.core.tests.factories import TEST_PASSWORD

    # Through allauth's login form, as a browser would (and past django-axes).
    response = client.post("/accounts/login/", {"login": owner.email, "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert client.get("/api/v1/me/").json()["email"] == owner.email
