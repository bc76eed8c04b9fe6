"""ipinfo faked at the HTTP level (`responses` on requests' transport): the real client runs."""

import pytest
import requests
import responses

from geo import iplookup

TOKEN = "test-token"
CHENNAI = {
    "ip": "49.207.48.0",
    "city": "Chennai",
    "region": "Tamil Nadu",
    "country": "IN",
    "loc": "13.0891,80.2107",
    "org": "AS24309 Atria Convergence Technologies",
}


@pytest.fixture
def ipinfo_api(settings):
    settings.IPINFO_TOKEN = TOKEN
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.mark.parametrize(
    ("ip", "anonymised"),
    [
        ("49.207.48.213", "49.207.48.0"),
        ("2401:4900:1c2a:9d3e:1234:5678:9abc:def0", "2401:4900:1c2a::"),
        ("::ffff:49.207.48.213", "49.207.48.0"),
        ("49.207.48.0", "49.207.48.0"),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_anonymise_keeps_the_slash_24_or_slash_48(ip, anonymised):
    assert iplookup.ip_anonymise(ip) == anonymised


def test_lookup_sends_only_the_anonymised_address_and_caches_it(ipinfo_api):
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
    geo = iplookup.ip_geolocate(ip="49.207.48.213")
    assert geo == iplookup.IpGeo(country="IN", region="Tamil Nadu", city="Chennai", latitude=13.0891, longitude=80.2107)
    assert len(ipinfo_api.calls) == 1
    assert ipinfo_api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    # Another visitor of the same /24: answered from the cache, no HTTP call.
    assert iplookup.ip_geolocate(ip="49.207.48.7") == geo
    assert len(ipinfo_api.calls) == 1


def test_cache_lifetime_comes_from_the_setting(ipinfo_api, settings):
    # Django's cache treats a timeout of 0 as "expire at once": every lookup goes out.
    settings.IPINFO_CACHE_SECONDS = 0
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
    iplookup.ip_geolocate(ip="49.207.48.1")
    iplookup.ip_geolocate(ip="49.207.48.1")
    assert len(ipinfo_api.calls) == 2
    settings.IPINFO_CACHE_SECONDS = 3600
    iplookup.ip_geolocate(ip="49.207.48.1")
    iplookup.ip_geolocate(ip="49.207.48.1")
    assert len(ipinfo_api.calls) == 3


def test_a_failure_is_retried(ipinfo_api):
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", status=503, body="busy")
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", body=requests.ConnectionError("reset"))
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
    geo = iplookup.ip_geolocate(ip="49.207.48.213")
    assert geo is not None and geo.city == "Chennai"
    assert len(ipinfo_api.calls) == 3


def test_gives_up_after_the_attempts_and_does_not_retry_a_client_error(ipinfo_api, settings):
    settings.IPINFO_MAX_ATTEMPTS = 2
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", status=502, body="bad gateway")
    assert iplookup.ip_geolocate(ip="49.207.48.213") is None
    assert len(ipinfo_api.calls) == 2
    ipinfo_api.get("https://ipinfo.io/8.8.8.0", status=403, json={"error": "token"})
    assert iplookup.ip_geolocate(ip="8.8.8.8") is None
    assert len(ipinfo_api.calls) == 3  # one call: a 403 fails the same way again


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "172.16.5.4",
        "192.168.1.100",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.1.1",
        "0.0.0.0",  # noqa: S104 (an address to look up, not a bind)
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:192.168.1.1",
        "2001:db8::1",
        "garbage",
    ],
)
def test_private_and_reserved_addresses_never_reach_http(ipinfo_api, ip):
    assert iplookup.ip_geolocate(ip=ip) is None
    assert len(ipinfo_api.calls) == 0


def test_without_a_token_nothing_is_looked_up(ipinfo_api, settings):
    settings.IPINFO_TOKEN = ""
    assert iplookup.ip_geolocate(ip="49.207.48.213") is None
    assert len(ipinfo_api.calls) == 0


@pytest.mark.redis
def test_the_cache_works_on_redis(ipinfo_api):
    from django.core.cache import caches

    assert "redis" in type(caches["default"]).__module__.lower()
    ipinfo_api.get("https://ipinfo.io/49.207.48.0", json=CHENNAI)
    first = iplookup.ip_geolocate(ip="49.207.48.10")
    assert iplookup.ip_geolocate(ip="49.207.48.20") == first
    assert len(ipinfo_api.calls) == 1
