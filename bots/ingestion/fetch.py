"""Fetch a web page for ingestion, safely.

A URL given by a bot owner is fetched by our server, so it must not become a way
into our network (SSRF): the host is resolved, every address it resolves to is
checked, and the connection goes to the checked address itself (the name is not
resolved a second time, so a DNS answer cannot change in between). Redirects are
followed by hand, a bounded number of times, and every hop is checked the same
way. The body is streamed and reading stops at the size limit; the whole fetch
has one deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urljoin

import httpx
from django.conf import settings

from bots.ingestion.validation import (
    EXTENSIONS,
    MD,
    PDF,
    TXT,
    check_content_matches,
    kind_from_content_type,
)
from chatbase.core.errors import UnsupportedMediaType, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
MAX_URL_LENGTH = 2000


class FetchFailed(ValidationFailed):
    """The page could not be fetched; ``detail`` says why, for the document's owner."""

    code = "fetch_failed"
    default_detail = "The page could not be fetched."


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    address: IPAddress


@dataclass(frozen=True)
class FetchedPage:
    url: str  # after redirects
    body: bytes
    content_type: str  # the media type, without parameters
    charset: str | None
    kind: str  # pdf, txt, md or html


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be fetched from, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # Addresses that embed an IPv4 address are judged by it.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded, allow_private=allow_private)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    # Never allowed, even with URL_FETCH_ALLOW_PRIVATE: this is where cloud metadata lives.
    if address.is_link_local:
        return "a link-local address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return None if allow_private else "a private address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationFailed(f"The host {host} could not be resolved.", code="url_unresolvable") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValidationFailed(f"The host {host} could not be resolved.", code="url_unresolvable")
    return addresses


def _parse(url: str) -> httpx.URL:
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed("The URL is empty.", code="invalid_url")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"The URL is longer than {MAX_URL_LENGTH} characters.", code="invalid_url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValidationFailed("The URL is not valid.", code="invalid_url") from exc
    if parsed.scheme not in ("http", "https"):
        raise ValidationFailed("Only http and https URLs can be added.", code="invalid_url")
    if not parsed.host:
        raise ValidationFailed("The URL has no host.", code="invalid_url")
    if parsed.userinfo:
        raise ValidationFailed("URLs with a user name or password are not supported.", code="invalid_url")
    return parsed


def check_url(url: str) -> Target:
    """Parse, resolve and vet a URL; raises ValidationFailed (``url_not_allowed``) if it is refused."""
    parsed = _parse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.host
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else resolve(host, port)
    allow_private = settings.URL_FETCH_ALLOW_PRIVATE
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason:
            raise ValidationFailed(
                f"The URL {url} is not allowed: its host resolves to {reason} ({address}).",
                code="url_not_allowed",
            )
    return Target(url=parsed, address=addresses[0])


def validate_url(url: str) -> str:
    """The URL to store for a new document (checked as :func:`check_url` does)."""
    return str(check_url(url).url)


class _Body:
    """Accumulates a response body up to a limit, decompressing gzip/deflate with a bound."""

    def __init__(self, limit: int, encoding: str):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        encoding = (encoding or "identity").strip().lower()
        if encoding in ("", "identity"):
            self.decoder = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            # We ask for identity; a server that compresses anyway gets a bounded decoder
            # (a few KB of gzip can inflate to gigabytes).
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        else:
            raise FetchFailed(f"The page uses an unsupported content encoding ({encoding}).")

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise FetchFailed(f"The page is larger than the limit of {self.limit:,} bytes.", code="fetch_too_large")
        self.parts.append(data)

    def feed(self, raw: bytes) -> None:
        if self.decoder is None:
            self._add(raw)
            return
        data = raw
        while data:
            try:
                out = self.decoder.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise FetchFailed("The page's compressed body is damaged.") from exc
            self._add(out)
            data = self.decoder.unconsumed_tail

    def value(self) -> bytes:
        return b"".join(self.parts)


def _kind(content_type: str, head: bytes, url: httpx.URL) -> str:
    suffix_kind = EXTENSIONS.get(PurePosixPath(url.path).suffix.lower())
    kind = kind_from_content_type(content_type)
    if kind is None and content_type in _GENERIC_TYPES:
        kind = PDF if head.lstrip()[:5] == b"%PDF-" else suffix_kind
    if kind is None:
        raise UnsupportedMediaType(f"The page's content type ({content_type or 'unknown'}) is not supported.")
    if kind == TXT and suffix_kind == MD:
        kind = MD  # Markdown is usually served as text/plain
    check_content_matches(kind, head[:8192], filename="The page", declared="served")
    return kind


def fetch_url(url: str) -> FetchedPage:
    """GET ``url`` under the size, time, redirect and address rules; raises FetchFailed with a reason."""
    timeout = settings.URL_FETCH_TIMEOUT_SECONDS
    max_bytes = settings.URL_FETCH_MAX_BYTES
    deadline = time.monotonic() + timeout
    current = url
    headers = {
        "User-Agent": settings.URL_FETCH_USER_AGENT,
        "Accept": "text/html, application/xhtml+xml, text/markdown, text/plain, application/pdf;q=0.9, */*;q=0.1",
        "Accept-Encoding": "identity",
    }
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        for _hop in range(settings.URL_FETCH_MAX_REDIRECTS + 1):
            target = check_url(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchFailed(f"Fetching the page took longer than {timeout:g} seconds.", code="fetch_timeout")
            # Connect to the address we checked; the name still goes in Host and in TLS SNI
            # (and the certificate is verified against it).
            request_url = target.url.copy_with(host=str(target.address))
            host_header = target.url.netloc.decode("ascii")
            extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
            try:
                with client.stream(
                    "GET",
                    request_url,
                    headers={**headers, "Host": host_header},
                    extensions=extensions,
                    timeout=remaining,
                ) as response:
                    if response.is_redirect:
                        current = urljoin(str(target.url), response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise FetchFailed(f"The page answered HTTP {response.status_code}.", code="fetch_http_error")
                    if response.status_code != 200:
                        raise FetchFailed(f"The page answered HTTP {response.status_code} without content.")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise FetchFailed(
                            f"The page is larger than the limit of {max_bytes:,} bytes.", code="fetch_too_large"
                        )
                    body = _Body(max_bytes, response.headers.get("content-encoding", ""))
                    for raw in response.iter_raw():
                        body.feed(raw)
                        if time.monotonic() > deadline:
                            raise FetchFailed(
                                f"Fetching the page took longer than {timeout:g} seconds.", code="fetch_timeout"
                            )
                    data = body.value()
                    content_type = response.headers.get("content-type", "")
            except httpx.TimeoutException as exc:
                raise FetchFailed(
                    f"Fetching the page took longer than {timeout:g} seconds.", code="fetch_timeout"
                ) from exc
            except httpx.HTTPError as exc:
                raise FetchFailed(f"The page could not be fetched ({type(exc).__name__}: {exc}).") from exc
            if not data:
                raise FetchFailed("The page is empty.", code="fetch_empty")
            media_type = content_type.split(";")[0].strip().lower()
            charset = None
            for param in content_type.split(";")[1:]:
                key, _, value = param.partition("=")
                if key.strip().lower() == "charset":
                    charset = value.strip().strip('"') or None
            return FetchedPage(
                url=str(target.url),
                body=data,
                content_type=media_type,
                charset=charset,
                kind=_kind(media_type, data, target.url),
            )
    raise FetchFailed(
        f"The page redirected more than {settings.URL_FETCH_MAX_REDIRECTS} times.", code="fetch_too_many_redirects"
    )
