"""What a model call cost, from the LLM_PRICES table (USD per million tokens)."""

from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from bots.llm.types import Usage

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
_SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _as_decimal(value, model: str) -> Decimal:
    try:
        # Through str so that 0.15 (a float from JSON) is 0.15, not 0.1499999...
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ImproperlyConfigured(f"LLM_PRICES[{model!r}] holds {value!r}, which is not a number.") from exc


def model_price(model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per million tokens, or None when the model is not priced.

    Providers report dated snapshots ("gpt-4o-mini-2024-07-18", "claude-haiku-4-5-20251001"):
    a snapshot costs what its priced base name costs.
    """
    prices: dict = settings.LLM_PRICES
    entry = prices.get(model)
    if entry is None:
        match = _SNAPSHOT.match(model)
        if match:
            entry = prices.get(match.group("base"))
    if entry is None:
        return None
    if isinstance(entry, dict):
        entry = (entry.get("input"), entry.get("output"))
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ImproperlyConfigured(f"LLM_PRICES[{model!r}] must be [input, output] USD per million tokens.")
    return _as_decimal(entry[0], model), _as_decimal(entry[1], model)


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price = model_price(model)
    if price is None:
        with _warned_lock:
            first_time = model not in _warned
            _warned.add(model)
        if first_time:
            logger.warning("No price for model %r in LLM_PRICES: its calls are counted as free.", model)
        return Decimal(0)
    input_price, output_price = price
    return (input_tokens * input_price + output_tokens * output_price) / MILLION


def usage_for(provider: str, model: str, input_tokens: int, output_tokens: int) -> Usage:
    return Usage(
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(model, input_tokens, output_tokens),
    )
