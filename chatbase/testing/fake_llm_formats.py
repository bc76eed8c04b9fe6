"""Wire formats of the fake LLM server (chatbase.testing.fake_llm): OpenAI Chat
Completions and Anthropic Messages, streamed and not, their error bodies, and the
``Script`` that says what to send."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# What a script can make the server do instead of (or in the middle of) answering.
FAILURES = frozenset(
    {
        "server_error",  # HTTP 500 with the provider's error body
        "rate_limit",  # HTTP 429 with Retry-After (``retry_after`` seconds, if set)
        "overloaded",  # Anthropic: HTTP 529 overloaded_error; OpenAI: HTTP 503
        "quota",  # OpenAI: 429 insufficient_quota; Anthropic: 400 "credit balance is too low"
        "hang",  # accept the request and never send a byte (until the client gives up)
        "hang_after_headers",  # send 200 and the stream headers, then nothing
        "cut",  # stream ``fail_after_tokens`` tokens, then close the connection mid-body
        "stall",  # stream ``fail_after_tokens`` tokens, then go silent with the connection open
        "error_event",  # stream ``fail_after_tokens`` tokens, then an in-stream error event
        "cut_before_end",  # stream the whole answer and its finish reason, then close before the end
    }
)

_TOKEN = re.compile(r"\s*\S+|\s+$")
_ids = itertools.count(1)
# Marks the point in a stream after which the answer is complete (usage, [DONE], message_stop).
TAIL = (None, b"")


STAMP = "@STAMP@"


def split_tokens(text: str) -> list[str]:
    """Word-sized tokens carrying their leading whitespace, as real tokenizers mostly do."""
    return _TOKEN.findall(text)


@dataclass
class Script:
    """What the fake answers to one request."""

    text: str = "This is the fake model's answer."
    # None streams as fast as the socket takes it.
    tokens_per_second: float | None = None
    # [{"name": str, "arguments": dict | str, "id": str (optional)}]; a str is sent
    # verbatim (to script invalid JSON).
    tool_calls: list[dict] = field(default_factory=list)
    failure: str | None = None
    fail_after_tokens: int = 3
    retry_after: float | None = None
    # Override the failure's status code or error body (e.g. Anthropic's 402 billing_error).
    status: int | None = None
    error_body: dict | None = None
    # (input_tokens, output_tokens); by default input is estimated from the request body
    # and output is the number of tokens streamed.
    usage: tuple[int, int] | None = None
    # The model named in the response; by default the one requested.
    model: str | None = None
    # Provider-native finish reason; by default stop/end_turn or tool_calls/tool_use.
    finish_reason: str | None = None
    # How long "hang" and "stall" wait for the client to give up before closing.
    hang_seconds: float = 30.0
    # Benchmarks: every STAMP in the text is replaced, as the token is written, by the
    # wall-clock time (seconds, 6 decimals), so a client can measure relay latency.
    stamp: bool = False

    def __post_init__(self) -> None:
        if self.failure is not None and self.failure not in FAILURES:
            raise ValueError(f"Unknown failure {self.failure!r}; choose from {sorted(FAILURES)}.")


def request_id_header(provider: str) -> dict[str, str]:
    name = "x-request-id" if provider == "openai" else "request-id"
    return {name: f"req_fake_{next(_ids)}"}


def error_response(provider: str, failure: str, script: Script) -> tuple[int, dict, dict[str, str]]:
    headers: dict[str, str] = {}
    if provider == "openai":
        status, body = {
            "server_error": (
                500,
                {"message": "The server had an error while processing your request.", "type": "server_error"},
            ),
            "rate_limit": (
                429,
                {"message": "Rate limit reached for requests.", "type": "requests", "code": "rate_limit_exceeded"},
            ),
            "overloaded": (503, {"message": "The engine is currently overloaded.", "type": "server_error"}),
            "quota": (
                429,
                {
                    "message": "You exceeded your current quota, please check your plan and billing details.",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                },
            ),
        }[failure]
        body = {"error": {"param": None, "code": None, **body}}
    else:
        status, body = {
            "server_error": (500, {"type": "api_error", "message": "Internal server error"}),
            "rate_limit": (429, {"type": "rate_limit_error", "message": "Too many requests for your rate limit."}),
            "overloaded": (529, {"type": "overloaded_error", "message": "Overloaded"}),
            "quota": (
                400,
                {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API. "
                    "Please go to Plans & Billing to upgrade or purchase credits.",
                },
            ),
        }[failure]
        body = {"type": "error", "error": body}
    headers.update(request_id_header(provider))
    if failure == "rate_limit" and script.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(script.retry_after)))
        headers["retry-after-ms"] = str(int(script.retry_after * 1000))
    return script.status or status, script.error_body or body, headers


def _input_tokens(script: Script, body: dict) -> int:
    if script.usage:
        return script.usage[0]
    text = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
    return max(1, len(text) // 4)


def _tool_arguments(call: dict) -> str:
    arguments = call.get("arguments", {})
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _argument_pieces(arguments: str) -> list[str]:
    # Streamed in a few pieces, split anywhere, as the real APIs do.
    size = max(1, math.ceil(len(arguments) / 3))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def openai_stream(script: Script, body: dict) -> Iterator[tuple[bool | None, bytes]]:
    model = json.dumps(script.model or body.get("model", "fake-model"))
    prefix = (
        f'{{"id":"chatcmpl-fake{next(_ids)}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{model},"system_fingerprint":null,"choices":['
    )

    def chunk(delta: str, finish: str | None = None) -> bytes:
        finish_json = json.dumps(finish)
        return (
            f'data: {prefix}{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish_json}}}]}}\n\n'
        ).encode()

    yield False, chunk('{"role":"assistant","content":""}')
    output = 0
    for token in split_tokens(script.text):
        output += 1
        yield True, chunk(f'{{"content":{json.dumps(token)}}}')
    for index, call in enumerate(script.tool_calls):
        call_id = call.get("id") or f"call_fake{next(_ids)}"
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": call["name"], "arguments": ""}}
        yield True, chunk(json.dumps({"tool_calls": [head]}))
        for piece in _argument_pieces(_tool_arguments(call)):
            output += 1
            yield True, chunk(json.dumps({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    finish = script.finish_reason or ("tool_calls" if script.tool_calls else "stop")
    yield False, chunk("{}", finish)
    yield TAIL
    if (body.get("stream_options") or {}).get("include_usage"):
        input_tokens, output_tokens = script.usage or (_input_tokens(script, body), output)
        total = input_tokens + output_tokens
        usage = json.dumps({"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": total})
        yield False, f'data: {prefix}],"usage":{usage}}}\n\n'.encode()
    yield False, b"data: [DONE]\n\n"


def _anthropic_event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream(script: Script, body: dict) -> Iterator[tuple[bool | None, bytes]]:
    model = script.model or body.get("model", "fake-model")
    input_tokens = _input_tokens(script, body)
    message = {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    yield False, _anthropic_event("message_start", {"type": "message_start", "message": message})
    index = 0
    output = 0
    tokens = split_tokens(script.text)
    if tokens:
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield False, _anthropic_event("content_block_start", block)
        yield False, _anthropic_event("ping", {"type": "ping"})
        # Only the token text changes from one delta to the next.
        head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        for token in tokens:
            output += 1
            yield True, head + b'"delta":{"type":"text_delta","text":%s}}\n\n' % json.dumps(token).encode()
        yield False, _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        index = 1
    for call in script.tool_calls:
        call_id = call.get("id") or f"toolu_fake{next(_ids)}"
        start = {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "tool_use", "id": call_id, "name": call["name"], "input": {}},
        }
        yield False, _anthropic_event("content_block_start", start)
        for piece in _argument_pieces(_tool_arguments(call)):
            output += 1
            delta = {"type": "input_json_delta", "partial_json": piece}
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            yield True, _anthropic_event("content_block_delta", event)
        yield False, _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    stop_reason = script.finish_reason or ("tool_use" if script.tool_calls else "end_turn")
    output_tokens = script.usage[1] if script.usage else output
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    yield False, _anthropic_event("message_delta", message_delta)
    yield TAIL
    yield False, _anthropic_event("message_stop", {"type": "message_stop"})


def stream_error_event(provider: str) -> bytes:
    if provider == "openai":
        error = {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}
        return f"data: {json.dumps(error)}\n\n".encode()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return _anthropic_event("error", error)


def openai_completion(script: Script, body: dict) -> dict:
    tokens = split_tokens(script.text)
    message: dict[str, Any] = {"role": "assistant", "content": script.text or None, "refusal": None}
    if script.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.get("id") or f"call_fake{next(_ids)}",
                "type": "function",
                "function": {"name": call["name"], "arguments": _tool_arguments(call)},
            }
            for call in script.tool_calls
        ]
    input_tokens, output_tokens = script.usage or (_input_tokens(script, body), len(tokens))
    return {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": script.model or body.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": script.finish_reason or ("tool_calls" if script.tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def anthropic_message(script: Script, body: dict) -> dict:
    content: list[dict] = [{"type": "text", "text": script.text}] if script.text else []
    for call in script.tool_calls:
        arguments = call.get("arguments", {})
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_fake{next(_ids)}",
                "name": call["name"],
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    input_tokens, output_tokens = script.usage or (_input_tokens(script, body), len(split_tokens(script.text)))
    return {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": script.model or body.get("model", "fake-model"),
        "content": content,
        "stop_reason": script.finish_reason or ("tool_use" if script.tool_calls else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
