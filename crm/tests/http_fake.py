"""The socket side of the fake third-party APIs: a threaded HTTP server answering JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Incoming:
    method: str
    path: str
    query: dict
    # JSON, or the fields of a form-encoded body, or None when empty.
    body: object
    # Lower-cased names.
    headers: dict


def serve(respond: Callable[[Incoming], tuple[int, object, dict]]) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a free local port; `respond` gives (status, JSON payload, headers)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without TCP_NODELAY a kept-alive client
        # waits ~40 ms for each response (Nagle against delayed ACK).
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _serve(self):
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                body: object = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                body = json.loads(raw) if raw else None
            incoming = Incoming(
                self.command,
                split.path,
                {k: v[0] for k, v in parse_qs(split.query).items()},
                body,
                {k.lower(): v for k, v in self.headers.items()},
            )
            status, payload, headers = respond(incoming)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
