"""A fake OpenAI and Anthropic API on a real 127.0.0.1 socket, for tests and benchmarks.

The real ``openai`` and ``anthropic`` SDKs talk to it over HTTP/1.1 exactly as they
talk to the real services: OpenAI Chat Completions (``POST /v1/chat/completions``,
streamed as ``chat.completion.chunk`` server-sent events ending in ``data: [DONE]``)
and Anthropic Messages (``POST /v1/messages``, streamed as ``message_start`` ...
``message_stop`` events), streaming or not.

Each request takes the next :class:`Script` queued for its provider (or the
provider's ``default`` script): the text to stream, the pace, tool calls, and an
optional failure. Every request is recorded (headers, JSON body, whether the client
hung up), so that tests can assert on what the SDKs sent and on what the server saw.

The server runs its own asyncio loop in a daemon thread, so a test's event loop (or
a benchmark's) never shares work with it. HTTP/1.1 is spoken by hand on
``asyncio.start_server``: that keeps the per-token cost to one small write and lets
the server cut a stream or notice a closed connection precisely.

Use it through the pytest fixtures at the bottom (``fake_llm`` and the session-wide
``fake_llm_server``); a conftest makes them available with::

    from chatbase.testing.fake_llm import fake_llm_fixture, fake_llm_server_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatbase.testing.fake_llm_formats import (
    FAILURES,
    STAMP,
    Script,
    anthropic_message,
    anthropic_stream,
    error_response,
    openai_completion,
    openai_stream,
    request_id_header,
    split_tokens,
    stream_error_event,
)

_STAMP = STAMP.encode()

__all__ = [
    "FAILURES",
    "STAMP",
    "FakeLLMServer",
    "RecordedRequest",
    "Script",
    "fake_llm_fixture",
    "fake_llm_server_fixture",
    "split_tokens",
]


@dataclass
class RecordedRequest:
    provider: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    script: Script | None
    received_at: float = field(default_factory=time.monotonic)
    tokens_sent: int = 0
    # Set from the server thread; tests wait on them.
    disconnected: threading.Event = field(default_factory=threading.Event)
    completed: threading.Event = field(default_factory=threading.Event)

    @property
    def client_disconnected(self) -> bool:
        """True when the client closed the connection before the response was complete."""
        return self.disconnected.is_set()

    @property
    def streaming(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))


class _Route:
    """The script queue of one provider."""

    def __init__(self, name: str):
        self.name = name
        self.default = Script()
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._queue.extend(scripts)

    def next_script(self) -> Script:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.default = Script()


class _Connection:
    """One client connection: a read buffer that survives the disconnect watcher."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.eof = False
        self.client_gone = asyncio.Event()
        self.closed_by_server = False

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def read_until(self, marker: bytes) -> bytes | None:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                end = index + len(marker)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                return data
            if self.eof or not await self._fill():
                return None

    async def read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if self.eof or not await self._fill():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def watch_for_hangup(self) -> None:
        # An HTTP/1.1 client sends nothing while it reads a response, so bytes here can
        # only be its next request (kept for parsing) and EOF means it hung up.
        with contextlib.suppress(ConnectionError):
            if not await self._fill():
                self._client_left()
                return
        # Data or an error: stop watching; a reset connection also means it is gone.
        if self.writer.transport.is_closing():
            self._client_left()

    def _client_left(self) -> None:
        # EOF after the server itself closed (a scripted cut) is not the client leaving.
        if not self.closed_by_server:
            self.client_gone.set()

    @property
    def open(self) -> bool:
        return not self.client_gone.is_set() and not self.writer.transport.is_closing()

    def abort(self) -> None:
        self.closed_by_server = True
        self.writer.transport.abort()

    def close(self) -> None:
        self.closed_by_server = True
        self.writer.close()


class FakeLLMServer:
    """The fake OpenAI/Anthropic server. ``start()`` it once; ``reset()`` between tests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        # 0: a free port, chosen by the system.
        self.port: int | None = port
        self.openai = _Route("openai")
        self.anthropic = _Route("anthropic")
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    # --- addresses ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    # --- lifecycle ---------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve_connection, self.host, self.port or 0, limit=1 << 20)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for conn in list(self._connections):
                conn.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = self._loop = self._server = None

    def reset(self) -> None:
        """Forget scripts and recorded requests and drop every open connection."""
        self.openai.reset()
        self.anthropic.reset()
        with self._requests_lock:
            self.requests.clear()
        if self._loop is not None:

            async def drop_connections() -> None:
                for conn in list(self._connections):
                    conn.abort()

            asyncio.run_coroutine_threadsafe(drop_connections(), self._loop).result(10)

    # --- inspection --------------------------------------------------------------
    def default_answer_set(self, *, tokens: int, tokens_per_second: float | None = None, stamp: bool = False) -> None:
        """What both providers answer when no script is queued: `tokens` words (each the
        time it was written, with `stamp`), paced at `tokens_per_second`."""
        words = [STAMP if stamp else f"word{i}" for i in range(tokens)]
        script = Script(text=" ".join(words), tokens_per_second=tokens_per_second, stamp=stamp)
        self.openai.default = self.anthropic.default = script

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        with self._requests_lock:
            return [r for r in self.requests if r.provider == provider]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` (from any thread) until it holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """``wait_until`` for async tests: polls without blocking the caller's loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.01)
        return predicate()

    # --- HTTP/1.1 ----------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        self._connections.add(conn)
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    break
                keep_alive = await self._respond(conn, *request)
                if not keep_alive or not conn.open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(conn)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(self, conn: _Connection) -> tuple[str, str, dict[str, str], bytes] | None:
        head = await conn.read_until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size_line = await conn.read_until(b"\r\n")
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0].strip(), 16)
                chunk = await conn.read_exactly(size + 2)
                if chunk is None:
                    return None
                if size == 0:
                    break
                body += chunk[:-2]
            return method, target, headers, bytes(body)
        length = int(headers.get("content-length", "0") or 0)
        body = await conn.read_exactly(length) if length else b""
        if body is None:
            return None
        return method, target, headers, body

    async def _respond(self, conn: _Connection, method: str, target: str, headers: dict[str, str], raw: bytes) -> bool:
        path = target.split("?", 1)[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if method == "POST" and path == "/_fake/default" and isinstance(body, dict):
            # A benchmark in another process changes the answer between its phases.
            self.default_answer_set(
                tokens=int(body.get("tokens", 100)),
                tokens_per_second=body.get("tokens_per_second"),
                stamp=bool(body.get("stamp", self.openai.default.stamp)),
            )
            await self._send_json(conn, 200, {"tokens": int(body.get("tokens", 100))})
            return True
        if method == "POST" and path.endswith("/chat/completions"):
            provider = "openai"
        elif method == "POST" and path.endswith("/v1/messages"):
            provider = "anthropic"
        else:
            record = RecordedRequest("unknown", method, path, headers, body, None)
            self._record(record)
            error = {"error": {"message": f"No route for {method} {path}", "type": "not_found"}}
            await self._send_json(conn, 404, error)
            record.completed.set()
            return True

        route = self.openai if provider == "openai" else self.anthropic
        script = route.next_script()
        record = RecordedRequest(provider, method, path, headers, body, script)
        self._record(record)
        conn.client_gone.clear()
        watcher = asyncio.ensure_future(conn.watch_for_hangup())
        try:
            keep_alive = await self._answer(conn, provider, script, body if isinstance(body, dict) else {}, record)
        finally:
            if conn.client_gone.is_set():
                record.disconnected.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if conn.client_gone.is_set():
            record.disconnected.set()
            return False
        return keep_alive

    def _record(self, record: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(record)

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        reason = {200: "OK", 400: "Bad Request", 402: "Payment Required", 404: "Not Found", 429: "Too Many Requests"}
        lines = [f"HTTP/1.1 {status} {reason.get(status, 'Error')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(self, conn: _Connection, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        all_headers = {"content-type": "application/json", "content-length": str(len(payload))}
        all_headers.update(headers or {})
        conn.writer.write(self._head(status, all_headers) + payload)
        await conn.writer.drain()

    async def _wait_for_hangup(self, conn: _Connection, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.client_gone.wait(), seconds)

    async def _answer(
        self, conn: _Connection, provider: str, script: Script, body: dict, record: RecordedRequest
    ) -> bool:
        failure = script.failure
        if failure in {"server_error", "rate_limit", "overloaded", "quota"}:
            status, error, extra = error_response(provider, failure, script)
            await self._send_json(conn, status, error, extra)
            record.completed.set()
            return True
        if failure == "hang":
            await self._wait_for_hangup(conn, script.hang_seconds)
            return False

        if not body.get("stream"):
            if failure in {"cut", "stall", "error_event", "hang_after_headers", "cut_before_end"}:
                # A non-streamed answer has no middle: these all look like a dropped connection.
                conn.abort()
                return False
            answer = openai_completion(script, body) if provider == "openai" else anthropic_message(script, body)
            await self._send_json(conn, 200, answer, request_id_header(provider))
            record.completed.set()
            return True

        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            **request_id_header(provider),
        }
        writer = conn.writer
        writer.write(self._head(200, headers))
        if failure == "hang_after_headers":
            await writer.drain()
            await self._wait_for_hangup(conn, script.hang_seconds)
            return False

        events = openai_stream(script, body) if provider == "openai" else anthropic_stream(script, body)
        loop = asyncio.get_running_loop()
        started = loop.time()
        interval = 1.0 / script.tokens_per_second if script.tokens_per_second else 0.0
        tokens = 0
        for is_token, payload in events:
            if is_token is None:
                if failure == "cut_before_end":
                    await writer.drain()
                    conn.close()
                    return False
                continue
            if is_token:
                if failure in {"cut", "stall", "error_event"} and tokens >= script.fail_after_tokens:
                    break
                if interval:
                    delay = started + tokens * interval - loop.time()
                    if delay > 0:
                        await writer.drain()
                        await asyncio.sleep(delay)
                tokens += 1
                record.tokens_sent = tokens
            if not conn.open:
                return False
            if script.stamp and is_token:
                payload = payload.replace(_STAMP, b"%.6f" % time.time())
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            if interval or not is_token:
                await writer.drain()
        else:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            record.completed.set()
            return True

        # The scripted failure, after ``fail_after_tokens`` tokens.
        await writer.drain()
        if failure == "cut":
            # Close without the terminating chunk: the client sees a truncated body.
            conn.close()
            return False
        if failure == "stall":
            await self._wait_for_hangup(conn, script.hang_seconds)
            return False
        payload = stream_error_event(provider)
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        await writer.drain()
        record.completed.set()
        return True


# --- pytest fixtures ----------------------------------------------------------------
@pytest.fixture(scope="session", name="fake_llm_server")
def fake_llm_server_fixture() -> Iterator[FakeLLMServer]:
    """One fake server for the whole run (started on a free 127.0.0.1 port)."""
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture(name="fake_llm")
def fake_llm_fixture(fake_llm_server: FakeLLMServer, settings) -> Iterator[FakeLLMServer]:
    """The fake server, reset, with OpenAI and Anthropic settings pointing at it."""
    fake_llm_server.reset()
    settings.OPENAI_BASE_URL = fake_llm_server.openai_base_url
    settings.OPENAI_API_KEY = "sk-fake-openai-key"
    settings.ANTHROPIC_BASE_URL = fake_llm_server.anthropic_base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-fake-anthropic-key"
    settings.LLM_PROVIDERS = ["openai", "anthropic", "extractive"]
    yield fake_llm_server
    fake_llm_server.reset()


def main(argv: list[str] | None = None) -> None:
    """Serve the fake on its own, for a benchmark whose server runs in another process:

    python -m chatbase.testing.fake_llm --port 8765 --tokens-per-second 50

    then run ChatBase with OPENAI_BASE_URL=http://127.0.0.1:8765/v1 (and/or
    ANTHROPIC_BASE_URL=http://127.0.0.1:8765) and any API key. `POST /_fake/default`
    with {"tokens": N, "tokens_per_second": R, "stamp": bool} changes the answer later.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic streaming server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens-per-second", type=float, default=None)
    parser.add_argument("--tokens", type=int, default=100, help="words in every answer")
    parser.add_argument("--stamp", action="store_true", help="every token is its emission time (benchmarks)")
    args = parser.parse_args(argv)
    server = FakeLLMServer(port=args.port).start()
    server.default_answer_set(tokens=args.tokens, tokens_per_second=args.tokens_per_second, stamp=args.stamp)
    print(f"OPENAI_BASE_URL={server.openai_base_url}", flush=True)
    print(f"ANTHROPIC_BASE_URL={server.anthropic_base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
