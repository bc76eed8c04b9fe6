"""The provider layer's public data: requests, messages and the events of a streamed answer.

``stream_chat`` yields :class:`TextDelta`, :class:`ProviderFailed` and
:class:`ToolCalled` events in any number, then exactly one :class:`ChatResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bots.llm.tools import ToolContext, ToolSpec

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A model's request to run a tool. ``id`` pairs it with its result message."""

    id: str
    name: str
    arguments: dict


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation, in the provider-neutral form.

    An assistant turn that asked for tools carries ``tool_calls``; each tool result is
    a ``tool`` message with the ``tool_call_id`` it answers (and the tool's ``name``).
    """

    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Passage:
    """A retrieved piece of a document. Its 1-based position is its citation number."""

    chunk_id: int | None
    document_id: int | None
    document_title: str
    url: str
    text: str
    score: float


@dataclass
class ChatRequest:
    system_prompt: str
    messages: list[ChatMessage]
    passages: list[Passage] = field(default_factory=list)
    # Overrides the default model of the bot's chosen provider (see docs/providers.md).
    model: str | None = None
    temperature: float = 0.3
    max_tokens: int = 600
    tools: list[ToolSpec] = field(default_factory=list)
    tool_context: ToolContext | None = None
    # Tried first when it is configured; then LLM_PROVIDERS in order.
    preferred_provider: str | None = None


@dataclass(frozen=True)
class Usage:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ProviderFailed:
    """A provider gave up. For logs and metrics, never for the visitor.

    ``retryable``: the failure is transient (timeout, 5xx, overload, rate limit) rather
    than a quota, credential or request problem. ``mid_stream``: some of its text had
    already been streamed; the next provider continues the same answer.
    """

    provider: str
    reason: str
    retryable: bool
    mid_stream: bool


@dataclass(frozen=True)
class ToolCalled:
    name: str
    arguments: dict
    result_summary: str


@dataclass(frozen=True)
class ChatResult:
    """The last event of every stream.

    ``text`` is the whole answer as streamed. ``providers`` lists, in order, every
    provider that contributed text. ``incomplete`` is true when the answer stopped
    early: the token limit (``finish_reason`` ``"length"``), or a provider failed
    mid-answer and no other could continue it (``"error"``).
    """

    text: str
    providers: list[str]
    usage: list[Usage]
    incomplete: bool
    finish_reason: str

    @property
    def provider(self) -> str:
        """The provider of record for a message: the one that wrote its end."""
        return self.providers[-1] if self.providers else ""

    @property
    def cost_usd(self) -> Decimal:
        return sum((u.cost_usd for u in self.usage), Decimal(0))

    @property
    def input_tokens(self) -> int:
        return sum(u.input_tokens for u in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(u.output_tokens for u in self.usage)


ChatEvent = TextDelta | ProviderFailed | ToolCalled | ChatResult
