"""The client's IP address, trusting X-Forwarded-For only from configured proxies.

Anyone can send an X-Forwarded-For header. It is read only when the peer that
connected to us is one of TRUSTED_PROXIES, and then from the right: each hop
appends the address it saw, so the first address (from the right) that is not a
trusted proxy is the client. Everything left of it was written by the client.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=1)
def _trusted(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _is_trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted(tuple(settings.TRUSTED_PROXIES)))


def _valid(address: str) -> str | None:
    address = address.strip()
    if address.startswith("[") and "]" in address:  # "[::1]:443"
        address = address[1 : address.index("]")]
    elif address.count(":") == 1:  # "1.2.3.4:5678"
        address = address.split(":")[0]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def resolve_client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    peer = _valid(peer or "")
    if peer is None or not forwarded_for or not _is_trusted(peer):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        address = _valid(hop)
        if address is None:
            break  # a malformed hop: stop at what a trusted proxy vouched for
        if not _is_trusted(address):
            return address
        peer = address
    return peer


def client_ip_from_request(request) -> str | None:
    return resolve_client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def client_ip_from_scope(scope) -> str | None:
    client = scope.get("client") or (None, None)
    headers = dict(scope.get("headers") or [])
    forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
    return resolve_client_ip(client[0], forwarded)
