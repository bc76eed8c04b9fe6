"""URL fetching against real HTTP servers on 127.0.0.1: limits, redirects and refused addresses."""

from __future__ import annotations

import gzip
import ipaddress
import socket
import time

import pytest

from bots.ingestion import fetch
from bots.ingestion.fetch import FetchFailed, address_refusal, check_url, fetch_url
from bots.models import Document
from bots.services.documents import document_create
from bots.tests.conftest import Response
from bots.tests.factories import BotFactory
from bots.tests.pdfs import make_pdf
from chatbase.core.errors import UnsupportedMediaType, ValidationFailed

PAGE = b"<html><head><title>Opening hours</title></head><body><h1>Hours</h1><p>Nine to five.</p></body></html>"


def _html(body=PAGE, **headers):
    return lambda request: Response(200, body, {"Content-Type": "text/html; charset=utf-8", **headers})


def _redirect(location, status=302):
    return lambda request: Response(status, b"", {"Location": location})


def test_fetches_a_page_and_sends_the_real_host_name(local_server):
    server = local_server({"/hours": _html()})
    page = fetch_url(server.url("/hours").replace("127.0.0.1", "localhost"))
    assert page.body == PAGE
    assert page.kind == "html"
    assert page.content_type == "text/html"
    assert page.charset == "utf-8"
    request = server.requests[0]
    # Connected to the checked address, but the server still sees the name it was asked for.
    assert request.headers["Host"] == f"localhost:{server.port}"
    assert request.headers["Accept-Encoding"] == "identity"


def test_follows_redirects_and_reports_the_final_url(local_server):
    server = local_server({"/old": _redirect("/older", 301), "/older": _redirect("/new"), "/new": _html()})
    page = fetch_url(server.url("/old"))
    assert page.url == server.url("/new")
    assert [r.path for r in server.requests] == ["/old", "/older", "/new"]


def test_every_redirect_hop_is_checked(local_server):
    # Allowed even with URL_FETCH_ALLOW_PRIVATE: link-local is where cloud metadata lives.
    server = local_server({"/go": _redirect("http://169.254.169.254/latest/meta-data/")})
    with pytest.raises(ValidationFailed) as excinfo:
        fetch_url(server.url("/go"))
    assert excinfo.value.code == "url_not_allowed"
    assert "link-local" in excinfo.value.detail


def test_a_redirect_to_another_scheme_is_refused(local_server):
    server = local_server({"/go": _redirect("file:///etc/passwd")})
    with pytest.raises(ValidationFailed) as excinfo:
        fetch_url(server.url("/go"))
    assert excinfo.value.code == "invalid_url"


def test_redirects_are_bounded(local_server, settings):
    settings.URL_FETCH_MAX_REDIRECTS = 3
    server = local_server({"/loop": _redirect("/loop")})
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/loop"))
    assert excinfo.value.code == "fetch_too_many_redirects"
    assert len(server.requests) == 4


def test_an_endless_body_is_cut_at_the_size_limit(local_server, settings):
    settings.URL_FETCH_MAX_BYTES = 100_000
    sent = []

    def endless(out):
        while True:
            out.write(b"<p>" + b"x" * 8192 + b"</p>")
            sent.append(1)

    server = local_server({"/big": lambda request: Response(200, endless, {"Content-Type": "text/html"})})
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/big"))
    assert excinfo.value.code == "fetch_too_large"
    assert "100,000" in excinfo.value.detail


def test_a_declared_length_over_the_limit_is_refused_before_reading(local_server, settings):
    settings.URL_FETCH_MAX_BYTES = 1000
    server = local_server({"/big": _html(b"x" * 5000)})
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/big"))
    assert excinfo.value.code == "fetch_too_large"


def test_a_compressed_bomb_is_cut_at_the_size_limit(local_server, settings):
    settings.URL_FETCH_MAX_BYTES = 1_000_000
    bomb = gzip.compress(b" " * 50_000_000)  # 50 KB on the wire
    server = local_server({"/bomb": _html(bomb, **{"Content-Encoding": "gzip"})})
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/bomb"))
    assert excinfo.value.code == "fetch_too_large"


def test_a_compressed_page_within_the_limit_is_decoded(local_server):
    server = local_server({"/gz": _html(gzip.compress(PAGE), **{"Content-Encoding": "gzip"})})
    assert fetch_url(server.url("/gz")).body == PAGE


def test_a_slow_server_hits_the_deadline(local_server, settings):
    settings.URL_FETCH_TIMEOUT_SECONDS = 1.0

    def trickle(out):
        for _ in range(100):
            out.write(b"x")
            out.flush()
            time.sleep(0.1)  # each read is quick; only the overall deadline stops this

    server = local_server({"/slow": lambda request: Response(200, trickle, {"Content-Type": "text/plain"})})
    started = time.monotonic()
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/slow"))
    assert excinfo.value.code == "fetch_timeout"
    assert time.monotonic() - started < 5


def test_http_errors_are_reported_with_their_status(local_server):
    server = local_server({})
    with pytest.raises(FetchFailed) as excinfo:
        fetch_url(server.url("/missing"))
    assert excinfo.value.code == "fetch_http_error"
    assert "404" in excinfo.value.detail


def test_unsupported_content_types_are_refused(local_server):
    server = local_server({"/logo": lambda request: Response(200, b"\x89PNG\r\n\x1a\n", {"Content-Type": "image/png"})})
    with pytest.raises(UnsupportedMediaType):
        fetch_url(server.url("/logo"))


def test_markdown_served_as_plain_text_is_read_as_markdown(local_server):
    server = local_server(
        {"/README.md": lambda request: Response(200, b"# Title\n\nBody", {"Content-Type": "text/plain"})}
    )
    assert fetch_url(server.url("/README.md")).kind == "md"


def test_a_refused_connection_is_a_fetch_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(FetchFailed) as excinfo:
            fetch_url(f"http://127.0.0.1:{port}/")
    assert "ConnectError" in excinfo.value.detail


# --- private addresses ------------------------------------------------------------


@pytest.mark.django_db
def test_private_addresses_are_refused_when_not_allowed(local_server, settings):
    settings.URL_FETCH_ALLOW_PRIVATE = False
    server = local_server({"/hours": _html()})
    for url in (server.url("/hours"), server.url("/hours").replace("127.0.0.1", "localhost")):
        with pytest.raises(ValidationFailed) as excinfo:
            fetch_url(url)
        assert excinfo.value.code == "url_not_allowed"
        with pytest.raises(ValidationFailed) as excinfo:
            document_create(bot=BotFactory(), url=url)
        assert excinfo.value.code == "url_not_allowed"
        assert "loopback" in excinfo.value.detail
    assert server.requests == []  # refused before any connection
    assert Document.objects.count() == 0


def test_every_resolved_address_is_checked(monkeypatch, settings):
    settings.URL_FETCH_ALLOW_PRIVATE = False

    def resolves_to_public_and_private(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", resolves_to_public_and_private)
    with pytest.raises(ValidationFailed) as excinfo:
        check_url("http://mixed.example/")
    assert "10.0.0.5" in excinfo.value.detail


def test_an_unresolvable_host_is_a_clear_error():
    with pytest.raises(ValidationFailed) as excinfo:
        check_url("http://no-such-host.invalid/")
    assert excinfo.value.code == "url_unresolvable"


@pytest.mark.parametrize(
    ("address", "refused_by_default", "refused_when_private_allowed"),
    [
        ("8.8.8.8", False, False),
        ("2606:4700:4700::1111", False, False),
        ("10.1.2.3", True, False),
        ("172.16.0.1", True, False),
        ("192.168.1.1", True, False),
        ("100.64.0.1", True, False),  # carrier-grade NAT
        ("fd00::1", True, False),
        ("127.0.0.1", True, False),
        ("::1", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("64:ff9b::7f00:1", True, False),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", True, False),  # 6to4 of 127.0.0.1
        ("169.254.169.254", True, True),
        ("fe80::1", True, True),
        ("224.0.0.1", True, True),
        ("ff02::1", True, True),
        ("0.0.0.0", True, True),  # noqa: S104 - an address under test, not a bind
        ("::", True, True),
        ("240.0.0.1", True, True),
    ],
)
def test_address_rules(address, refused_by_default, refused_when_private_allowed):
    ip = ipaddress.ip_address(address)
    assert bool(address_refusal(ip, allow_private=False)) is refused_by_default
    assert bool(address_refusal(ip, allow_private=True)) is refused_when_private_allowed


def test_a_pdf_served_with_a_generic_type_is_recognised(local_server):
    pdf = make_pdf(["Price list"])
    server = local_server({"/file": lambda request: Response(200, pdf, {"Content-Type": "application/octet-stream"})})
    page = fetch_url(server.url("/file"))
    assert (page.kind, page.body) == ("pdf", pdf)


def test_a_page_whose_content_contradicts_its_type_is_refused(local_server):
    server = local_server(
        {"/x": lambda request: Response(200, b"\x7fELF\x02\x01" + bytes(64), {"Content-Type": "text/html"})}
    )
    with pytest.raises(ValidationFailed) as excinfo:
        fetch_url(server.url("/x"))
    assert excinfo.value.code == "type_mismatch"
    assert excinfo.value.detail == "The page is served as HTML text but its content is an executable (ELF)."
