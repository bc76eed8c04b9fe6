"""SDK clients, built once per event loop and configuration.

A client owns a connection pool bound to the loop that opened it, and building one
(TLS context included) costs far more than a streamed answer's first token should
wait; so each loop (Daphne has one) keeps its clients. ``max_retries=0``: the router
owns retries and fallbacks. Timeouts come from the LLM_* settings, far below the
SDKs' 600 s default.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

import anthropic
import openai
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
# Local servers (Ollama, llama.cpp) need no key, but the SDK insists on one.
KEYLESS_PLACEHOLDER = "not-needed"

HTTP_CLIENTS = ("aiohttp", "httpx")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _timeout_values() -> tuple[float, float]:
    connect = settings.LLM_CONNECT_TIMEOUT
    # The router enforces the first-token and stall timeouts precisely; the socket read
    # timeout is the backstop should a read ever escape them.
    read = max(settings.LLM_FIRST_TOKEN_TIMEOUT, settings.LLM_STALL_TIMEOUT) + 1.0
    return connect, read


def _http_client_kind() -> str:
    kind = (settings.LLM_HTTP_CLIENT or "aiohttp").strip().lower()
    if kind not in HTTP_CLIENTS:
        raise ImproperlyConfigured(f"LLM_HTTP_CLIENT must be one of {', '.join(HTTP_CLIENTS)}, not {kind!r}.")
    return kind


def _http_client(sdk) -> Any:
    """The SDK's own aiohttp-backed client, or None for its default (httpx over anyio).

    Both are the SDK's documented transports. aiohttp parses a streamed answer in C;
    the default reads it through h11 in Python and re-arms the socket's reader for
    every chunk, which cost Daphne about a fifth more CPU per streamed answer
    (docs/performance.md).
    """
    return sdk.DefaultAioHttpClient() if _http_client_kind() == "aiohttp" else None


def _cached(key: tuple, build) -> Any:
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
        _close_with_loop(loop, per_loop)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = build()
    return client


def openai_client() -> openai.AsyncOpenAI:
    connect, read = _timeout_values()
    base_url = settings.OPENAI_BASE_URL or OPENAI_DEFAULT_BASE_URL
    api_key = settings.OPENAI_API_KEY or KEYLESS_PLACEHOLDER
    key = ("openai", base_url, api_key, connect, read, _http_client_kind())
    return _cached(
        key,
        lambda: openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(connect=connect, read=read, write=connect * 2, pool=connect),
            http_client=_http_client(openai),
        ),
    )


def anthropic_client() -> anthropic.AsyncAnthropic:
    connect, read = _timeout_values()
    base_url = settings.ANTHROPIC_BASE_URL or ANTHROPIC_DEFAULT_BASE_URL
    api_key = settings.ANTHROPIC_API_KEY
    key = ("anthropic", base_url, api_key, connect, read, _http_client_kind())
    return _cached(
        key,
        lambda: anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(connect=connect, read=read, write=connect * 2, pool=connect),
            http_client=_http_client(anthropic),
        ),
    )


async def aclose_clients() -> None:
    """Close this loop's clients and their connections (tests, shutdown hooks)."""
    await _close(_clients.pop(asyncio.get_running_loop(), {}))


async def _close(per_loop: dict) -> None:
    clients = [client for key, client in per_loop.items() if key is not _GUARD]
    per_loop.clear()
    for client in clients:
        await client.close()


# A loop's client dict also holds its _close_with_loop generator, under this key:
# the loop itself holds its generators only weakly.
_GUARD = object()


def _close_with_loop(loop: asyncio.AbstractEventLoop, per_loop: dict) -> None:
    """Close `loop`'s clients when the loop is shut down.

    A loop made for one call (async_to_sync in a Celery task or a sync view,
    asyncio.run) would otherwise leave them open: an aiohttp session keeps its loop,
    and so this cache's entry and the pool's sockets, alive for good, and says so in
    an error at exit. Every such loop is shut down by asyncio.run, which first closes
    the async generators still open on it (loop.shutdown_asyncgens): this one closes
    the clients. Daphne's loop lives as long as the process and is never shut down.
    """
    loop_ref = weakref.ref(loop)  # not the loop itself: this sits in the loop's own entry

    async def lifetime():
        try:
            yield
        finally:
            # Only its own dict: after aclose_clients the loop may have a new one in use.
            owner = loop_ref()
            if owner is not None and _clients.get(owner) is per_loop:
                del _clients[owner]
            await _close(per_loop)

    guard = lifetime()
    per_loop[_GUARD] = guard
    # Run it to its `yield` now, on this loop (the loop registers it as it starts):
    # the body up to there is synchronous, so one step does it.
    with contextlib.suppress(StopIteration):
        guard.__anext__().send(None)
