import json
import time

import pytest
from hubspot.utils.signature import Signature

from crm.models import WebhookEvent
from crm.signatures import hubspot_v3_signature

pytestmark = pytest.mark.django_db

SECRET = "hubspot-client-secret"
URL = "/api/v1/webhooks/hubspot/"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.HUBSPOT_CLIENT_SECRET = SECRET


def events(*ids, kind="contact.creation"):
    return json.dumps(
        [{"eventId": i, "subscriptionType": kind, "portalId": 4242, "objectId": 900 + i, "occurredAt": 1} for i in ids]
    )


def now_ms(offset_seconds: float = 0) -> str:
    return str(int((time.time() + offset_seconds) * 1000))


def oracle_headers(body: str, uri: str = f"http://testserver{URL}", timestamp: str | None = None) -> dict:
    timestamp = timestamp or now_ms()
    # The official client's v3 signer, as HubSpot would sign the request.
    signature = Signature.get_signature(SECRET, body, "v3", http_uri=uri, http_method="POST", timestamp=timestamp)
    return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}


def post(client, body: str, headers: dict, path: str = URL, **extra):
    return client.post(path, data=body, content_type="application/json", headers=headers, **extra)


def test_our_signer_agrees_with_the_official_validator():
    for body in ["[]", events(1, 2), '[{"eventId": 1, "note": "caf\\u00e9 \u00e9"}]']:
        timestamp = now_ms()
        uri = "https://example.com/api/v1/webhooks/hubspot/?a=1&b=2"
        ours = hubspot_v3_signature(secret=SECRET, method="POST", uri=uri, body=body.encode(), timestamp=timestamp)
        assert Signature.is_valid(
            signature=ours,
            client_secret=SECRET,
            request_body=body,
            http_uri=uri,
            http_method="POST",
            signature_version="v3",
            timestamp=timestamp,
        )


def test_a_request_signed_by_the_official_signer_is_accepted_and_recorded(client, django_capture_on_commit_callbacks):
    body = events(1, 2)
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, body, oracle_headers(body))
    assert response.status_code == 200, response.content
    assert response.json() == {"received": 2, "replays": 0}
    assert sorted(WebhookEvent.objects.values_list("event_id", "event_type", "status")) == [
        ("1", "contact.creation", "received"),
        ("2", "contact.creation", "received"),
    ]
    # The view only records and enqueues: one processing task per new event.
    assert len(callbacks) == 2


def test_a_replay_answers_200_and_is_processed_once(client, django_capture_on_commit_callbacks):
    body = events(7)
    headers = oracle_headers(body)
    with django_capture_on_commit_callbacks() as first:
        assert post(client, body, headers).status_code == 200
    with django_capture_on_commit_callbacks() as second:
        response = post(client, body, headers)
    assert response.status_code == 200
    assert response.json() == {"received": 0, "replays": 1}
    assert (len(first), len(second)) == (1, 0)
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    "case",
    ["tampered_body", "wrong_secret", "stale", "future", "missing_timestamp", "garbage_timestamp", "no_signature"],
)
def test_bad_signatures_are_refused_with_401_json(client, case):
    body = events(1)
    headers = oracle_headers(body)
    if case == "tampered_body":
        body = body.replace("901", "902")
    elif case == "wrong_secret":
        headers["X-HubSpot-Signature-v3"] = Signature.get_signature(
            "other", body, "v3", http_uri=f"http://testserver{URL}", timestamp=headers["X-HubSpot-Request-Timestamp"]
        )
    elif case in ("stale", "future"):
        timestamp = now_ms(-301) if case == "stale" else now_ms(61)
        headers = oracle_headers(body, timestamp=timestamp)
    elif case == "missing_timestamp":
        del headers["X-HubSpot-Request-Timestamp"]
    elif case == "garbage_timestamp":
        headers["X-HubSpot-Request-Timestamp"] = "yesterday"
    else:
        del headers["X-HubSpot-Signature-v3"]
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert response.json()["detail"]
    assert WebhookEvent.objects.count() == 0


def test_slight_clock_skew_into_the_future_is_tolerated(client):
    body = events(3)
    assert post(client, body, oracle_headers(body, timestamp=now_ms(30))).status_code == 200


def test_v1_and_v2_only_requests_are_refused(client):
    body = events(1)
    uri = f"http://testserver{URL}"
    for version in ("v1", "v2"):
        signature = Signature.get_signature(SECRET, body, version, http_uri=uri, http_method="POST")
        headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": version}
        response = post(client, body, headers)
        assert response.status_code == 401
        assert "v3" in response.json()["detail"]
    assert WebhookEvent.objects.count() == 0


def test_the_uri_is_rebuilt_as_https_behind_a_trusted_tls_proxy(client, settings):
    body = events(5)
    # A proxy forwards the Host header the client used (the test client sends none by default).
    https_headers = {**oracle_headers(body, uri=f"https://testserver{URL}"), "Host": "testserver"}
    # Not trusted: the proxy's header is ignored, so an https signature does not match.
    assert post(client, body, {**https_headers, "X-Forwarded-Proto": "https"}).status_code == 401
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert post(client, body, {**https_headers, "X-Forwarded-Proto": "https"}).status_code == 200


def test_the_query_string_is_signed_with_hubspots_decoded_characters(client):
    body = events(6)
    path = f"{URL}?portal=42&since=2024-01-01T00%3A00%3A00Z"
    headers = oracle_headers(body, uri=f"http://testserver{URL}?portal=42&since=2024-01-01T00:00:00Z")
    assert post(client, body, headers, path=path).status_code == 200


@pytest.mark.parametrize("body", ["{not json", "{}", "[]", '[{"subscriptionType": "contact.creation"}]'])
def test_a_signed_but_malformed_body_is_400(client, body):
    response = post(client, body, oracle_headers(body))
    assert response.status_code == 400
    assert response.json()["code"] in ("invalid_json", "invalid_payload")


def test_not_configured_means_every_request_is_refused(client, settings):
    settings.HUBSPOT_CLIENT_SECRET = ""
    body = events(1)
    assert post(client, body, oracle_headers(body)).status_code == 401
