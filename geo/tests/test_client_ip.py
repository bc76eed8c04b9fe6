"""The client IP that geolocation uses: X-Forwarded-For only from trusted proxies."""

import pytest
from django.test import RequestFactory

from chatbase.core.clientip import client_ip_from_request, resolve_client_ip


@pytest.fixture
def proxies(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


def test_spoofed_forwarded_for_from_an_untrusted_client_is_ignored(proxies):
    request = RequestFactory().get("/", REMOTE_ADDR="49.207.48.213", HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert client_ip_from_request(request) == "49.207.48.213"


def test_forwarded_for_behind_trusted_proxies_is_read_from_the_right(proxies):
    # The client wrote "1.1.1.1" itself; our proxies appended what they saw.
    assert resolve_client_ip("10.0.0.5", "1.1.1.1, 49.207.48.213, 10.0.0.9") == "49.207.48.213"
    assert resolve_client_ip("2001:db8:ffff::1", "49.207.48.213") == "49.207.48.213"


def test_nothing_is_trusted_by_default(settings):
    settings.TRUSTED_PROXIES = []
    assert resolve_client_ip("10.0.0.5", "49.207.48.213") == "10.0.0.5"


def test_a_malformed_hop_stops_the_walk(proxies):
    assert resolve_client_ip("10.0.0.5", "49.207.48.213, garbage") == "10.0.0.5"
