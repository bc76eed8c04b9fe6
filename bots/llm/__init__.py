"""The LLM provider layer: OpenAI (and compatible servers), Anthropic and an offline
extractive answerer behind one streaming interface, with fallbacks, timeouts, usage
and cost, and a shared tool registry. See docs/providers.md.

    from bots.llm import ChatRequest, ChatMessage, stream_chat

    async for event in stream_chat(ChatRequest(system_prompt=..., messages=[...])):
        ...  # TextDelta, ProviderFailed, ToolCalled, then a final ChatResult
"""

from bots.llm import builtin_tools as _builtin_tools  # noqa: F401  (registers the shipped tools)
from bots.llm.router import stream_chat
from bots.llm.tools import ToolContext, ToolSpec
from bots.llm.types import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Passage,
    ProviderFailed,
    TextDelta,
    ToolCall,
    ToolCalled,
    Usage,
)

__all__ = [
    "ChatEvent",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "Passage",
    "ProviderFailed",
    "TextDelta",
    "ToolCall",
    "ToolCalled",
    "ToolContext",
    "ToolSpec",
    "Usage",
    "stream_chat",
]
