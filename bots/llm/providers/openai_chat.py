"""OpenAI, or any OpenAI-compatible server, through streamed Chat Completions.

Chat Completions rather than the Responses API: it is the dialect that Ollama, vLLM
and llama.cpp speak too, so OPENAI_BASE_URL can point at any of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import httpx2
import openai
from django.conf import settings

from bots.llm import clients
from bots.llm.pricing import usage_for
from bots.llm.prompting import CONTINUE_INSTRUCTION, system_with_passages
from bots.llm.providers.base import (
    PROGRESS,
    ModelCall,
    Provider,
    ProviderError,
    ProviderEvent,
    TurnEnd,
    normalise_finish_reason,
    retry_after_seconds,
)
from bots.llm.providers.sse import parse_json, sse_events
from bots.llm.types import TextDelta, ToolCall

QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self) -> None:
        # Per model, what it refused with a 400 and how the request was adapted
        # (learnt per process): reasoning models take no temperature and only
        # "max_completion_tokens"; some compatible servers know only "max_tokens".
        self._no_temperature: set[str] = set()
        self._token_parameter: dict[str, str] = {}

    def is_configured(self) -> bool:
        return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)

    def default_model(self) -> str:
        return settings.OPENAI_MODEL

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        client = clients.openai_client()
        text: list[str] = []
        partial_calls: dict[int, dict] = {}
        finish_reason: str | None = None
        usage: dict | None = None
        model = call.model
        try:
            # The SDK sends the request and raises its typed errors; the body is parsed
            # here (see providers/sse.py for why).
            async with client.chat.completions.with_streaming_response.create(
                **self.request_arguments(call)
            ) as response:
                async for _event, data in sse_events(response.iter_lines()):
                    if data.startswith("[DONE]"):
                        break
                    chunk = parse_json(data)
                    if chunk is None:
                        raise ProviderError("unreadable stream chunk", retryable=True)
                    if chunk.get("error"):
                        raise _stream_error(chunk["error"])
                    model = chunk.get("model") or model
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            text.append(content)
                            yield TextDelta(content)
                        if delta.get("tool_calls"):
                            _collect_tool_calls(partial_calls, delta["tool_calls"])
                            yield PROGRESS
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except openai.BadRequestError as exc:
            if self._adapt(call.model, exc):
                raise ProviderError(
                    f"model refused a parameter; adapted: {exc.message}"[:300], retryable=True, retry_immediately=True
                ) from exc
            raise classify(exc) from exc
        except (openai.APIError, httpx2.HTTPError, aiohttp.ClientError) as exc:
            # Broken after the finish reason: the answer is whole, only its usage is lost.
            if finish_reason is None:
                if isinstance(exc, openai.APIError):
                    raise classify(exc) from exc
                raise ProviderError(f"stream broken: {type(exc).__name__}", retryable=True) from exc
        if finish_reason is None:
            # The body ended cleanly but the answer did not: a proxy or server cut it.
            raise ProviderError("stream ended before the answer finished", retryable=True)

        tool_calls, invalid = _tool_calls(partial_calls)
        turn_usage = None
        if usage is not None:
            input_tokens = usage.get("prompt_tokens") or 0
            output_tokens = usage.get("completion_tokens") or 0
            turn_usage = usage_for(self.name, model, input_tokens, output_tokens)
        yield TurnEnd(
            text="".join(text),
            tool_calls=tool_calls,
            usage=turn_usage,
            finish_reason=normalise_finish_reason(finish_reason),
            invalid_arguments=invalid,
        )

    def _adapt(self, model: str, exc: openai.BadRequestError) -> bool:
        """Learn from a 400 that names a parameter the model refuses; True if adapted."""
        message = str(exc.message).lower()
        parameter = str(getattr(exc, "param", None) or "").lower()
        if parameter == "temperature" or ("temperature" in message and "support" in message):
            # "Unsupported value: 'temperature' does not support 0.3 with this model."
            if model in self._no_temperature:
                return False
            self._no_temperature.add(model)
            return True
        current = self._token_parameter.get(model) or _max_tokens_parameter()
        if current == "max_tokens" and "max_completion_tokens" in message:
            # "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens' instead."
            self._token_parameter[model] = "max_completion_tokens"
            return True
        refused = ("unrecognized", "unsupported", "unknown", "not supported", "extra")
        if (
            current == "max_completion_tokens"
            and "max_completion_tokens" in message
            and any(w in message for w in refused)
        ):
            self._token_parameter[model] = "max_tokens"
            return True
        return False

    def request_arguments(self, call: ModelCall) -> dict:
        token_parameter = self._token_parameter.get(call.model) or _max_tokens_parameter()
        arguments: dict = {
            "model": call.model,
            "messages": self.messages(call),
            "stream": True,
            "stream_options": {"include_usage": True},
            token_parameter: call.max_tokens,
        }
        if call.model not in self._no_temperature:
            arguments["temperature"] = call.temperature
        if call.tools:
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
                }
                for spec in call.tools
            ]
            if not call.allow_tool_calls:
                arguments["tool_choice"] = "none"
        return arguments

    @staticmethod
    def messages(call: ModelCall) -> list[dict]:
        messages: list[dict] = []
        system = system_with_passages(call.system_prompt, call.passages)
        if system:
            messages.append({"role": "system", "content": system})
        for message in call.messages:
            if message.role == "tool":
                tool_call_id = message.tool_call_id or ""
                messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": message.content})
            elif message.role == "assistant" and message.tool_calls:
                messages.append(
                    {
                        "role": "assistant",
                        "content": message.content or None,
                        "tool_calls": [
                            {
                                "id": tool_call.id,
                                "type": "function",
                                "function": {"name": tool_call.name, "arguments": json.dumps(tool_call.arguments)},
                            }
                            for tool_call in message.tool_calls
                        ],
                    }
                )
            else:
                messages.append({"role": message.role, "content": message.content})
        if call.continuation:
            messages.append({"role": "assistant", "content": call.continuation})
            # A user turn, not a system one: many local chat templates refuse a system
            # message anywhere but first.
            messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
        return messages


def _max_tokens_parameter() -> str:
    configured = settings.OPENAI_MAX_TOKENS_PARAM
    if configured:
        return configured
    # OpenAI's newer models refuse "max_tokens"; compatible servers mostly read only it.
    return "max_tokens" if settings.OPENAI_BASE_URL else "max_completion_tokens"


def _collect_tool_calls(partial_calls: dict[int, dict], pieces: list[dict]) -> None:
    # A call streams as pieces sharing an index: the first has its id and name, the
    # rest carry slices of the JSON arguments.
    for piece in pieces:
        slot = partial_calls.setdefault(piece.get("index", 0), {"id": "", "name": "", "arguments": []})
        if piece.get("id"):
            slot["id"] = piece["id"]
        function = piece.get("function") or {}
        if function.get("name"):
            slot["name"] += function["name"]
        if function.get("arguments"):
            slot["arguments"].append(function["arguments"])


def _stream_error(error: object) -> ProviderError:
    """An error sent inside a 200 stream (``data: {"error": {...}}``)."""
    details = error if isinstance(error, dict) else {"message": str(error)}
    code = str(details.get("code") or details.get("type") or "")
    if code in QUOTA_CODES:
        return ProviderError(f"quota exhausted ({code})", retryable=False)
    return ProviderError(f"error in stream: {details.get('message') or code or 'unknown'}"[:300], retryable=True)


def _tool_calls(partial_calls: dict[int, dict]) -> tuple[list[ToolCall], frozenset[str]]:
    calls: list[ToolCall] = []
    invalid: set[str] = set()
    for index in sorted(partial_calls):
        slot = partial_calls[index]
        call_id = slot["id"] or f"call_{index}"
        raw = "".join(slot["arguments"]).strip() or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = {}
            invalid.add(call_id)
        if not isinstance(arguments, dict):
            arguments = {}
            invalid.add(call_id)
        calls.append(ToolCall(id=call_id, name=slot["name"], arguments=arguments))
    return calls, frozenset(invalid)


def classify(exc: openai.APIError) -> ProviderError:
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("connection failed" if _connection_failed(exc) else "timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection failed", retryable=True)
    code = exc.code or ""
    error_type = getattr(exc, "type", None) or ""
    if code in QUOTA_CODES or error_type in QUOTA_CODES:
        # Waiting does not refill a quota: no retry, straight to the next provider.
        return ProviderError(f"quota exhausted ({code or error_type})", retryable=False)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ProviderError(
                "rate limited (429)",
                retryable=True,
                rate_limited=True,
                retry_after=retry_after_seconds(exc.response.headers),
            )
        if status >= 500 or status == 408:
            return ProviderError(f"server error ({status})", retryable=True)
        return ProviderError(f"request refused ({status}{': ' + code if code else ''})", retryable=False)
    return ProviderError(f"error: {exc.message}"[:300], retryable=True)


def _connection_failed(exc: BaseException) -> bool:
    """Whether a "timeout" was a connection that failed (refused, unreachable, reset).

    The openai SDK's aiohttp transport reports every aiohttp connection error as a
    connect timeout (the anthropic one does not); the error it wraps says what happened.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return False
        if isinstance(cause, aiohttp.ClientConnectionError):
            return True
        cause = cause.__cause__
    return False
