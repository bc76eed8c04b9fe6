"""Every error is JSON {"detail","code"} with the right status, never an HTML page."""

import pytest

pytestmark = pytest.mark.django_db


def test_unknown_url_is_json_404(api_client):
    response = api_client.get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unknown_api_url_is_json_404(owner_client):
    response = owner_client.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_missing_token_is_401_json(api_client):
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_wrong_token_is_401_json(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer cb_not-a-real-token")
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_malformed_bearer_header_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer a b")
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "code"}


def test_malformed_json_body_is_400_json(owner_client):
    response = owner_client.generic("POST", "/api/v1/tokens/", data="{not json", content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "parse_error"
    assert "JSON" in body["detail"]


def test_validation_error_names_the_field(owner_client):
    response = owner_client.post("/api/v1/tokens/", {"name": "x" * 101}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith("name:")
    assert "name" in body["errors"]


def test_wrong_method_is_json_405(owner_client):
    response = owner_client.put("/api/v1/me/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_errors_never_render_html_for_server_errors(client, monkeypatch, settings):
    from chatbase.core import health

    def boom():
        raise RuntimeError("database exploded")

    monkeypatch.setattr(health, "check_database", boom)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "error: RuntimeError"
