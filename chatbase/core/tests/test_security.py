"""Hardening: login throttling, security headers and CSP, request body limits."""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator

from chatbase.asgi import application
from chatbase.core.tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return UserFactory(is_staff=True, is_superuser=True)


def admin_login(client, email, password, ip="203.0.113.7"):
    return client.post("/admin/login/?next=/admin/", {"username": email, "password": password}, REMOTE_ADDR=ip)


def test_admin_login_is_locked_after_repeated_failures_for_that_user_and_address(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert admin_login(client, staff.email, "wrong").status_code == 200  # the form again
    assert admin_login(client, staff.email, "wrong").status_code == 429  # the limit reached
    # Locked: even the right password is refused from this address.
    locked = admin_login(client, staff.email, TEST_PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # The same user from another address, and another user from this one, are not locked.
    assert admin_login(client, staff.email, TEST_PASSWORD, ip="198.51.100.9").status_code == 302
    client.logout()
    other = UserFactory(is_staff=True, is_superuser=True)
    assert admin_login(client, other.email.upper(), TEST_PASSWORD).status_code == 302


def test_a_spoofed_forwarded_for_does_not_dodge_the_lockout(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 2
    for n in range(2):
        client.post(
            "/admin/login/", {"username": staff.email, "password": "x"}, REMOTE_ADDR="203.0.113.7",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        )  # fmt: skip
    response = client.post(
        "/admin/login/", {"username": staff.email, "password": TEST_PASSWORD}, REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="10.9.9.9",
    )  # fmt: skip
    assert response.status_code == 429


def test_a_successful_login_resets_the_failure_count(client, staff, settings):
    settings.AXES_FAILURE_LIMIT = 3
    admin_login(client, staff.email, "wrong")
    admin_login(client, staff.email, "wrong")
    assert admin_login(client, staff.email, TEST_PASSWORD).status_code == 302
    client.logout()
    admin_login(client, staff.email, "wrong")
    admin_login(client, staff.email, "wrong")
    assert admin_login(client, staff.email, TEST_PASSWORD).status_code == 302


@pytest.mark.parametrize("path", ["/admin/login/", "/api/docs/"])
def test_pages_carry_a_content_security_policy_without_inline_scripts(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip())
    assert policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'self'"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "<script>" not in response.content.decode().replace(" ", "")


def test_api_docs_load_swagger_from_this_server_not_a_cdn(client):
    page = client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page


async def _asgi_post(path: str, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    communicator = ApplicationCommunicator(application, scope)
    for n, chunk in enumerate(body_chunks):
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": n < len(body_chunks) - 1})
    start = await communicator.receive_output(timeout=10)
    body = await communicator.receive_output(timeout=10)
    return start["status"], json.loads(body["body"])


async def test_a_declared_oversized_body_is_refused_before_it_is_read(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    status, body = await _asgi_post(
        "/api/v1/bots/", [b"x" * 10], [(b"content-length", b"5000000000"), (b"content-type", b"application/json")]
    )
    assert status == 413 and body == {"detail": "The request body is too large.", "code": "too_large"}


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    status, body = await _asgi_post(
        "/api/v1/bots/", [b"{" + b" " * 600, b" " * 600, b"}"], [(b"content-type", b"application/json")]
    )
    assert status == 413 and body["code"] == "too_large"


def test_a_json_body_over_the_parse_limit_is_413_json(owner_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = owner_client.post(
        "/api/v1/bots/", data=json.dumps({"name": "x" * 5000}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is too large.", "code": "too_large"}
