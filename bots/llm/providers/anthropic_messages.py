"""Anthropic through the streamed Messages API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import httpx2
from django.conf import settings

from bots.llm import clients
from bots.llm.pricing import usage_for
from bots.llm.prompting import CONTINUE_INSTRUCTION, system_with_passages
from bots.llm.providers.base import (
    PROGRESS,
    ModelCall,
    Progress,
    Provider,
    ProviderError,
    ProviderEvent,
    TurnEnd,
    normalise_finish_reason,
    retry_after_seconds,
)
from bots.llm.providers.sse import parse_json, sse_events
from bots.llm.types import TextDelta, ToolCall

# error.details.error_code values that mean money, not load.
SPEND_CODES = {
    "contract_spend_limit_reached",
    "enforced_spend_limit_reached",
    "linked_organization_spend_limit_reached",
    "linked_organization_billing_unavailable",
}


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self) -> None:
        # Models that answered a prefill with "prefill not supported" (learnt per process).
        self._no_prefill: set[str] = set()

    def is_configured(self) -> bool:
        return bool(settings.ANTHROPIC_API_KEY)

    def default_model(self) -> str:
        return settings.ANTHROPIC_MODEL

    def continues_in_place(self, call: ModelCall) -> bool:
        return call.model not in self._no_prefill

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        client = clients.anthropic_client()
        prefill = bool(call.continuation) and self.continues_in_place(call)
        arguments, stripped_whitespace = self.request_arguments(call, prefill=prefill)
        turn = _Turn(model=call.model, trim_leading=stripped_whitespace)
        try:
            # The SDK sends the request and raises its typed errors; the body is parsed
            # here (see providers/sse.py for why).
            async with client.messages.with_streaming_response.create(**arguments) as response:
                async for name, data in sse_events(response.iter_lines()):
                    if name == "ping":
                        continue
                    event = parse_json(data)
                    if event is None:
                        raise ProviderError("unreadable stream event", retryable=True)
                    output = turn.feed(event.get("type") or name, event)
                    if output is not None:
                        yield output
        except anthropic.BadRequestError as exc:
            if prefill and "prefill" in _error_info(exc.body)[1].lower():
                self._no_prefill.add(call.model)
                raise ProviderError(
                    "model does not support prefill; continuing by instruction",
                    retryable=True,
                    retry_immediately=True,
                ) from exc
            raise classify(exc) from exc
        except (anthropic.APIError, httpx2.HTTPError, aiohttp.ClientError) as exc:
            # Broken after the stop reason: the answer is whole.
            if turn.stop_reason is None:
                if isinstance(exc, anthropic.APIError):
                    raise classify(exc) from exc
                raise ProviderError(f"stream broken: {type(exc).__name__}", retryable=True) from exc
        if turn.stop_reason is None:
            raise ProviderError("stream ended before the answer finished", retryable=True)

        tool_calls, invalid = _tool_calls(turn.blocks)
        yield TurnEnd(
            text="".join(turn.text),
            tool_calls=tool_calls,
            usage=usage_for(self.name, turn.model, turn.input_tokens, turn.output_tokens),
            finish_reason=normalise_finish_reason(turn.stop_reason),
            invalid_arguments=invalid,
        )

    def request_arguments(self, call: ModelCall, *, prefill: bool = True) -> tuple[dict, bool]:
        """(arguments of messages.create, whether the prefill lost trailing whitespace).

        There is no ``temperature``: the current Messages API (SDK 2.x) has no sampling
        parameters, so a bot's temperature only reaches OpenAI-compatible models.
        """
        system, messages = self.messages(call)
        stripped_whitespace = False
        partial = call.continuation.rstrip()
        if partial and prefill:
            # Assistant prefill: the model carries on from exactly this text, which may
            # not end in whitespace.
            stripped_whitespace = len(partial) < len(call.continuation)
            _append(messages, "assistant", [{"type": "text", "text": partial}])
        elif partial:
            _append(messages, "assistant", [{"type": "text", "text": partial}])
            _append(messages, "user", [{"type": "text", "text": CONTINUE_INSTRUCTION}])
        arguments: dict = {
            "model": call.model,
            "max_tokens": call.max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            arguments["system"] = system
        if call.tools:
            arguments["tools"] = [
                {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}
                for spec in call.tools
            ]
            if not call.allow_tool_calls:
                arguments["tool_choice"] = {"type": "none"}
        return arguments, stripped_whitespace

    @staticmethod
    def messages(call: ModelCall) -> tuple[str, list[dict]]:
        system_parts = [system_with_passages(call.system_prompt, call.passages)]
        messages: list[dict] = []
        for message in call.messages:
            if message.role == "system":
                # No system role inside Anthropic's messages: it joins the system prompt.
                system_parts.append(message.content.strip())
            elif message.role == "tool":
                block = {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}
                _append(messages, "user", [block])
            elif message.role == "assistant":
                blocks: list[dict] = []
                if message.content.strip():
                    blocks.append({"type": "text", "text": message.content})
                blocks += [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                    for call in message.tool_calls
                ]
                if blocks:
                    _append(messages, "assistant", blocks)
            elif message.content.strip():
                _append(messages, "user", [{"type": "text", "text": message.content}])
        return "\n\n".join(part for part in system_parts if part), messages


class _Turn:
    """What one streamed Messages response has said so far."""

    def __init__(self, *, model: str, trim_leading: bool):
        self.model = model
        # A prefill cannot end in whitespace, so it was trimmed; the model then tends to
        # start with the space the reader has already seen.
        self.trim_leading = trim_leading
        self.text: list[str] = []
        self.blocks: dict[int, dict] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None

    def feed(self, kind: str, event: dict) -> TextDelta | Progress | None:
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._text(delta.get("text") or "")
            if delta.get("type") == "input_json_delta":
                self._block(event)["arguments"].append(delta.get("partial_json") or "")
                return PROGRESS
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._block(event).update(
                    id=block.get("id") or "", name=block.get("name") or "", initial=block.get("input")
                )
        elif kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            usage = message.get("usage") or {}
            self.input_tokens = _input_tokens(usage)
            self.output_tokens = usage.get("output_tokens") or 0
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            usage = event.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.output_tokens = usage["output_tokens"]
            if usage.get("input_tokens") is not None:
                self.input_tokens = _input_tokens(usage)
        elif kind == "error":
            # Overloaded (or worse) in the middle of a 200 stream.
            raise classify_error(0, event, None)
        return None

    def _text(self, piece: str) -> TextDelta | None:
        if self.trim_leading and piece:
            piece = piece.lstrip()
            self.trim_leading = not piece
        if not piece:
            return None
        self.text.append(piece)
        return TextDelta(piece)

    def _block(self, event: dict) -> dict:
        return self.blocks.setdefault(event.get("index", 0), {"arguments": []})


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    # Consecutive turns of one role are one turn to Anthropic; merging keeps tool
    # results of parallel calls in the single user turn the API expects.
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _input_tokens(usage: dict) -> int:
    # Cache reads and writes are input too; they are priced as plain input here.
    return (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )


def _tool_calls(blocks: dict[int, dict]) -> tuple[list[ToolCall], frozenset[str]]:
    calls: list[ToolCall] = []
    invalid: set[str] = set()
    for index in sorted(blocks):
        slot = blocks[index]
        if "id" not in slot:
            continue
        raw = "".join(slot["arguments"]).strip()
        if raw:
            try:
                arguments = json.loads(raw)
            except ValueError:
                arguments = None
        else:
            arguments = slot.get("initial") or {}
        if not isinstance(arguments, dict):
            arguments = {}
            invalid.add(slot["id"])
        calls.append(ToolCall(id=slot["id"], name=slot["name"], arguments=arguments))
    return calls, frozenset(invalid)


def _error_info(body: object) -> tuple[str, str, str]:
    """(error type, message, details.error_code) from an Anthropic error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", str(body or ""), ""
    details = error.get("details")
    code = details.get("error_code", "") if isinstance(details, dict) else ""
    return str(error.get("type") or ""), str(error.get("message") or ""), str(code or "")


def classify(exc: anthropic.APIError) -> ProviderError:
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError("timed out", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError("connection failed", retryable=True)
    response = getattr(exc, "response", None)
    return classify_error(
        getattr(exc, "status_code", 0) or 0,
        getattr(exc, "body", None),
        response.headers if response is not None else None,
    )


def classify_error(status: int, body: object, headers) -> ProviderError:
    """An Anthropic error response (``status``) or in-stream error event (status 0)."""
    error_type, message, code = _error_info(body)
    if status == 402 or error_type == "billing_error" or code in SPEND_CODES or "credit balance" in message.lower():
        # Waiting does not buy credits: no retry, straight to the next provider.
        return ProviderError(f"billing or spend limit ({code or error_type or status})", retryable=False)
    if status == 529 or error_type == "overloaded_error":
        return ProviderError("overloaded", retryable=True)
    if status == 429 or error_type == "rate_limit_error":
        return ProviderError(
            "rate limited (429)", retryable=True, rate_limited=True, retry_after=retry_after_seconds(headers)
        )
    if status >= 500 or status in {0, 408} or error_type in {"api_error", "timeout_error"}:
        return ProviderError(f"server error ({status or error_type or 'in stream'})", retryable=True)
    return ProviderError(f"request refused ({status}{': ' + error_type if error_type else ''})", retryable=False)
