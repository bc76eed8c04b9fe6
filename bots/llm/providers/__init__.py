"""The providers, by the names LLM_PROVIDERS and Bot.provider use."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from bots.llm.providers.anthropic_messages import AnthropicProvider
from bots.llm.providers.base import ModelCall, Provider, ProviderError, TurnEnd
from bots.llm.providers.extractive import ExtractiveProvider
from bots.llm.providers.openai_chat import OpenAIProvider

__all__ = ["PROVIDERS", "ModelCall", "Provider", "ProviderError", "TurnEnd", "provider_order"]

logger = logging.getLogger(__name__)

PROVIDERS: dict[str, Provider] = {
    provider.name: provider for provider in (OpenAIProvider(), AnthropicProvider(), ExtractiveProvider())
}


def provider_order(preferred: str | None = None) -> list[Provider]:
    """The providers to try, in order: ``preferred`` first if it is configured, then
    LLM_PROVIDERS, skipping those without a key. Never empty: with nothing configured
    it is the extractive answerer."""
    names = [name.strip().lower() for name in settings.LLM_PROVIDERS if name.strip()]
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise ImproperlyConfigured(
            f"LLM_PROVIDERS names unknown provider(s) {', '.join(unknown)}; known: {', '.join(PROVIDERS)}."
        )
    if preferred:
        preferred = preferred.strip().lower()
        if preferred in PROVIDERS:
            names = [preferred] + [name for name in names if name != preferred]
        else:
            logger.warning("Unknown preferred provider %r ignored.", preferred)
    order: list[Provider] = []
    for name in names:
        provider = PROVIDERS[name]
        if provider.is_configured() and provider not in order:
            order.append(provider)
    return order or [PROVIDERS["extractive"]]
