"""What every provider implements, and the failure the router acts on."""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from bots.llm.tools import ToolSpec
from bots.llm.types import ChatMessage, Passage, TextDelta, ToolCall, Usage


class ProviderError(Exception):
    """A provider could not answer (or finish answering). The router moves on.

    ``retryable``: transient (timeouts, 5xx, overload, rate limit). ``rate_limited``: a
    429 that is not a quota problem, which the router may retry after ``retry_after``.
    ``retry_immediately``: the provider adapted to the failure and can be asked again.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        rate_limited: bool = False,
        retry_after: float | None = None,
        retry_immediately: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.rate_limited = rate_limited
        self.retry_after = retry_after
        # The provider adapted (e.g. learnt a model refuses prefills): ask it once more.
        self.retry_immediately = retry_immediately


@dataclass
class ModelCall:
    """One request to one provider: a turn of the answer."""

    system_prompt: str  # the request's system prompt, without passages
    messages: list[ChatMessage]
    passages: list[Passage]
    model: str
    temperature: float
    max_tokens: int
    tools: list[ToolSpec] = field(default_factory=list)
    # After the last tool round: tools stay declared (the history refers to them) but
    # the model may not call them again.
    allow_tool_calls: bool = True
    # Text of this turn already streamed by a provider that failed; continue it.
    continuation: str = ""


@dataclass
class TurnEnd:
    """The end of one provider response: what it asked for and what it cost."""

    text: str
    tool_calls: list[ToolCall]
    usage: Usage | None
    finish_reason: str  # "stop", "length", "tool_calls", "content_filter"
    # Ids of tool calls whose arguments were not valid JSON.
    invalid_arguments: frozenset[str] = frozenset()


class Progress:
    """Streamed output that is not text (tool-call arguments): it keeps the stall timer fed."""


PROGRESS = Progress()

ProviderEvent = TextDelta | Progress | TurnEnd


class Provider(ABC):
    name: str = ""

    @abstractmethod
    def is_configured(self) -> bool:
        """True when this provider can be called (a key, or a server, is set)."""

    @abstractmethod
    def default_model(self) -> str:
        """The model asked for when the bot names none (or names another provider's)."""

    def continues_in_place(self, call: ModelCall) -> bool:
        """True when a continuation resumes inside the interrupted text itself (an
        assistant prefill), so the model writes any space it needs; False when it comes
        as a new message, which never starts with the space between two words."""
        return False

    @abstractmethod
    def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        """Yield TextDelta/Progress events, then one TurnEnd; raise ProviderError on failure."""


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


FINISH_REASONS = {
    # Anthropic's stop reasons, in OpenAI's words.
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def normalise_finish_reason(reason: str | None) -> str:
    if not reason:
        return "stop"
    return FINISH_REASONS.get(reason, reason)
