"""SDK clients, built once per event loop and configuration.

A client owns a connection pool bound to the loop that opened it, and building one
(TLS context included) costs far more than a streamed answer's first token should
wait; so each loop (Daphne has one) keeps its clients. ``max_retries=0``: the router
owns retries and fallbacks. Timeouts come from the LLM_* settings, far below the
SDKs' 600 s default.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import anthropic
import openai
from django.conf import settings

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
# Local servers (Ollama, llama.cpp) need no key, but the SDK insists on one.
KEYLESS_PLACEHOLDER = "not-needed"

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _timeout_values() -> tuple[float, float]:
    connect = settings.LLM_CONNECT_TIMEOUT
    # The router enforces the first-token and stall timeouts precisely; the socket read
    # timeout is the backstop should a read ever escape them.
    read = max(settings.LLM_FIRST_TOKEN_TIMEOUT, settings.LLM_STALL_TIMEOUT) + 1.0
    return connect, read


def _cached(key: tuple, build) -> Any:
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = build()
    return client


def openai_client() -> openai.AsyncOpenAI:
    connect, read = _timeout_values()
    base_url = settings.OPENAI_BASE_URL or OPENAI_DEFAULT_BASE_URL
    api_key = settings.OPENAI_API_KEY or KEYLESS_PLACEHOLDER
    key = ("openai", base_url, api_key, connect, read)
    return _cached(
        key,
        lambda: openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(connect=connect, read=read, write=connect * 2, pool=connect),
        ),
    )


def anthropic_client() -> anthropic.AsyncAnthropic:
    connect, read = _timeout_values()
    base_url = settings.ANTHROPIC_BASE_URL or ANTHROPIC_DEFAULT_BASE_URL
    api_key = settings.ANTHROPIC_API_KEY
    key = ("anthropic", base_url, api_key, connect, read)
    return _cached(
        key,
        lambda: anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(connect=connect, read=read, write=connect * 2, pool=connect),
        ),
    )


async def aclose_clients() -> None:
    """Close this loop's clients and their connections (tests, shutdown hooks)."""
    per_loop = _clients.pop(asyncio.get_running_loop(), {})
    for client in per_loop.values():
        await client.close()
