"""IP geolocation through the official ipinfo client: cached, retried, anonymised.

* Only the anonymised network address is ever stored or sent (IPv4 /24, IPv6 /48):
  geolocation databases work at that granularity anyway, and the visitor's full
  address never leaves the process.
* Private, loopback, link-local, reserved and other non-global addresses are never
  looked up (there is nothing to learn, and it would leak internal topology).
* Answers are kept in Django's cache (Redis when configured) for IPINFO_CACHE_SECONDS,
  through the client's own cache interface, so a second lookup makes no HTTP call.
* Connection errors, timeouts and 5xx answers are retried with exponential backoff
  (tenacity); a 4xx or a quota error is not (it would fail the same way again).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache

import ipinfo
import requests
from django.conf import settings
from django.core.cache import cache
from ipinfo.cache.interface import CacheInterface
from ipinfo.error import APIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

logger = logging.getLogger(__name__)

CACHE_PREFIX = "ipinfo:"


@dataclass(frozen=True)
class IpGeo:
    country: str = ""
    region: str = ""
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None


def ip_parse(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    # "::ffff:1.2.3.4" is an IPv4 client seen through a dual-stack socket.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_anonymise(ip: str | None) -> str | None:
    """The network address of the visitor's /24 (IPv4) or /48 (IPv6); None if not an IP."""
    address = ip_parse(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def ip_is_public(ip: str | None) -> bool:
    address = ip_parse(ip)
    if address is None:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


class DjangoCache(CacheInterface):
    """The ipinfo client's cache, backed by Django's cache with a TTL from settings."""

    def _key(self, key: str) -> str:
        return CACHE_PREFIX + key

    def __contains__(self, key):
        return cache.get(self._key(key)) is not None

    def __getitem__(self, key):
        value = cache.get(self._key(key))
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        cache.set(self._key(key), value, timeout=settings.IPINFO_CACHE_SECONDS)

    def __delitem__(self, key):
        cache.delete(self._key(key))


@lru_cache(maxsize=4)
def _handler(token: str, timeout: float) -> ipinfo.Handler:
    return ipinfo.getHandler(token, cache=DjangoCache(), request_options={"timeout": timeout})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, APIError):
        return exc.error_code >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _coordinates(loc: object) -> tuple[float | None, float | None]:
    try:
        lat, lng = (float(part) for part in str(loc).split(","))
    except ValueError:
        return None, None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None, None
    return lat, lng


def ip_geolocate(*, ip: str | None) -> IpGeo | None:
    """Where the visitor's network is, or None (no token, not a public address, or failure)."""
    token = settings.IPINFO_TOKEN
    anonymised = ip_anonymise(ip)
    if not token or anonymised is None or not ip_is_public(anonymised):
        return None
    handler = _handler(token, settings.IPINFO_TIMEOUT_SECONDS)
    retrying = Retrying(
        stop=stop_after_attempt(settings.IPINFO_MAX_ATTEMPTS),
        wait=wait_exponential(multiplier=settings.IPINFO_RETRY_BASE_SECONDS, max=settings.IPINFO_RETRY_MAX_SECONDS),
        retry=retry_if_exception(_transient),
        reraise=True,
    )
    try:
        details = retrying(handler.getDetails, anonymised).all
    except Exception as exc:  # geolocation is an enrichment: a lead never fails for it
        logger.warning("IP geolocation of %s failed: %s", anonymised, type(exc).__name__)
        return None
    if details.get("bogon"):
        return None
    latitude, longitude = _coordinates(details.get("loc", ""))
    return IpGeo(
        country=str(details.get("country") or "")[:2],
        region=str(details.get("region") or "")[:100],
        city=str(details.get("city") or "")[:100],
        latitude=latitude,
        longitude=longitude,
    )
