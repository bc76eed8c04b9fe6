"""Fixtures of the bots tests: local HTTP servers, a private media folder, the embedder."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Request:
    method: str
    path: str
    headers: Message  # case-insensitive, as HTTP headers are
    body: bytes


@dataclass
class Response:
    status: int = 200
    body: bytes | Callable = b""
    headers: dict = field(default_factory=dict)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that closes a kept-alive connection (or stops reading at its limit) is normal here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    """A real HTTP server on 127.0.0.1 whose answers the test scripts per path."""

    def __init__(self, routes: dict[str, Callable[[Request], Response]]):
        self.routes = routes
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, self.headers, self.rfile.read(length))
                server.requests.append(request)
                route = server.routes.get(self.path.split("?", 1)[0])
                response = route(request) if route else Response(404, b"not found")
                self.send_response(response.status)
                headers = {"Content-Type": "text/plain", **response.headers}
                if callable(response.body):
                    # A streamed body without a length: the writer decides when (or whether) to stop.
                    headers["Connection"] = "close"
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    # The client may stop reading (at its size limit), as it should.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        response.body(self.wfile)
                    self.close_connection = True
                    return
                headers.setdefault("Content-Length", str(len(response.body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = _handle

            def log_message(self, *args):
                return

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def local_server():
    servers: list[LocalServer] = []

    def start(routes: dict[str, Callable[[Request], Response]]) -> LocalServer:
        server = LocalServer(routes)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def stored_files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def local_embedder():
    """The real local embedder, its model loaded once for the whole test process."""
    from bots.embeddings import get_embedder

    embedder = get_embedder()
    embedder.embed_documents(["warm up"])
    return embedder


class EmbedderSpy:
    """Counts the texts the embedder is asked for (the real embedder still does the work)."""

    def __init__(self, embedder, method: str = "embed_documents"):
        self.embedder = embedder
        self.method = method
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        return getattr(type(self.embedder), self.method)(self.embedder, texts)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture
def embed_spy(local_embedder, monkeypatch):
    spy = EmbedderSpy(local_embedder)
    monkeypatch.setattr(local_embedder, "embed_documents", spy)
    return spy


@pytest.fixture
def query_spy(local_embedder, monkeypatch):
    """As embed_spy, for the questions the query batcher embeds."""
    spy = EmbedderSpy(local_embedder, "embed_queries")
    monkeypatch.setattr(local_embedder, "embed_queries", spy)
    return spy
