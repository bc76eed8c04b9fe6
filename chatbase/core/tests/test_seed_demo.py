import json

import pytest
from django.core.management import call_command

from chatbase.core.models import ApiToken, User

pytestmark = pytest.mark.django_db


def _seed_json(capsys) -> dict:
    call_command("seed_demo", "--json")
    out = capsys.readouterr().out
    # --json prints exactly one JSON object on stdout and nothing else.
    return json.loads(out)


def test_seed_demo_is_idempotent_and_prints_the_contract(capsys, api_client, client, settings):
    first = _seed_json(capsys)
    second = _seed_json(capsys)
    assert set(first) == {"api_token", "bot_id", "bot_public_key", "admin_email", "admin_password"}
    assert first == second
    assert User.objects.filter(email=settings.DEMO_ADMIN_EMAIL, is_staff=True, is_superuser=True).count() == 1
    # The same token every run, not a new one per run.
    assert ApiToken.objects.filter(user__email=settings.DEMO_OWNER_EMAIL).count() == 1

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {first['api_token']}")
    assert api_client.get("/api/v1/me/").json()["email"] == settings.DEMO_OWNER_EMAIL

    login = client.post("/admin/login/", {"username": first["admin_email"], "password": first["admin_password"]})
    assert login.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_seed_demo_never_resets_a_changed_admin_password(capsys, settings):
    _seed_json(capsys)
    admin = User.objects.get(email=settings.DEMO_ADMIN_EMAIL)
    admin.set_password("changed-by-the-operator")
    admin.save()
    call_command("seed_demo")
    captured = capsys.readouterr()
    admin.refresh_from_db()
    assert admin.check_password("changed-by-the-operator")
    assert "changed after seeding" in captured.err
