"""One streamed answer from the first provider able to give it.

``stream_chat`` tries the providers in order (see ``providers.provider_order``) and
streams the answer's text as it arrives. A provider that fails before its first
token costs the visitor nothing but a short wait; one that fails mid-answer is
followed by the next provider, asked to continue the same answer from the text
already streamed. Tool calls run between model turns (at most LLM_MAX_TOOL_ROUNDS).

Callers that may stop reading early should close the stream, e.g. with
``contextlib.aclosing(stream_chat(request))``; cancelling the consuming task closes
it too. Either way the upstream HTTP response is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from django.conf import settings

from bots.llm import tools
from bots.llm.providers import ModelCall, Provider, ProviderError, TurnEnd, provider_order
from bots.llm.providers.base import Progress, ProviderEvent
from bots.llm.types import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ProviderFailed,
    TextDelta,
    ToolCalled,
    Usage,
)
from chatbase.core.errors import Unavailable, ValidationFailed

logger = logging.getLogger(__name__)

# A continuation is held back until this many characters have arrived, to drop any
# text it repeats from the interrupted answer.
CONTINUATION_LOOKAHEAD = 80
MIN_OVERLAP = 8
# Wait before retrying a 429 that came without Retry-After.
DEFAULT_RATE_LIMIT_WAIT = 1.0
# A provider that adapted its request to a refusal (a parameter, a prefill) is asked
# again at once; two adaptations may be needed (temperature, then the token limit).
MAX_IMMEDIATE_RETRIES = 2


async def stream_chat(request: ChatRequest) -> AsyncIterator[ChatEvent]:
    """Stream the answer to ``request``: TextDelta, ProviderFailed and ToolCalled events,
    then one ChatResult. Raises Unavailable when no provider could answer at all."""
    if not request.messages:
        raise ValidationFailed("A chat request needs at least one message.")
    order = provider_order(request.preferred_provider)
    offered = _offered_tools(request)
    messages = list(request.messages)
    answer: list[str] = []  # everything the caller has been sent
    turn_text = ""  # the current model turn's text, which a next provider would continue
    contributors: list[str] = []
    usage: list[Usage] = []
    tool_rounds = 0
    position = 0
    rate_limit_retries = 0
    immediate_retries = 0

    while True:
        if position >= len(order):
            if answer:
                # Nobody could finish it, but the visitor has read part of an answer:
                # keep that, marked incomplete, rather than an error after the fact.
                yield ChatResult("".join(answer), contributors, usage, incomplete=True, finish_reason="error")
                return
            raise Unavailable("No language model could answer right now. Try again shortly.")
        provider = order[position]
        call = ModelCall(
            system_prompt=request.system_prompt,
            messages=messages,
            passages=request.passages,
            model=_model_for(provider, request, order),
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            tools=offered if provider.name != "extractive" else [],
            allow_tool_calls=tool_rounds < settings.LLM_MAX_TOOL_ROUNDS,
            continuation=turn_text,
        )
        joiner = _ContinuationJoiner(turn_text, in_place=provider.continues_in_place(call)) if turn_text else None
        end: TurnEnd | None = None
        try:
            async with contextlib.aclosing(_with_timeouts(provider.stream(call))) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        text = joiner.feed(event.text) if joiner else event.text
                    elif isinstance(event, TurnEnd):
                        end = event
                        text = joiner.flush() if joiner else ""
                    else:
                        continue
                    if text:
                        turn_text += text
                        answer.append(text)
                        if provider.name not in contributors:
                            contributors.append(provider.name)
                        yield event if joiner is None else TextDelta(text)
        except ProviderError as exc:
            logger.debug("Provider %s failed: %s", provider.name, exc.reason)
            yield ProviderFailed(provider.name, exc.reason, exc.retryable, mid_stream=bool(turn_text))
            if exc.retry_immediately and immediate_retries < MAX_IMMEDIATE_RETRIES:
                immediate_retries += 1
                continue
            if exc.rate_limited and rate_limit_retries < settings.LLM_RATE_LIMIT_RETRIES:
                wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
                if wait <= settings.LLM_RETRY_AFTER_MAX:
                    rate_limit_retries += 1
                    await asyncio.sleep(wait)
                    continue
            position += 1
            rate_limit_retries = 0
            immediate_retries = 0
            continue
        if end is None:
            raise RuntimeError(f"Provider {provider.name} ended its stream without a TurnEnd.")
        if end.usage is not None:
            usage.append(end.usage)

        if end.tool_calls and call.allow_tool_calls and offered:
            tool_rounds += 1
            rate_limit_retries = 0
            messages.append(ChatMessage(role="assistant", content=turn_text, tool_calls=list(end.tool_calls)))
            for tool_call in end.tool_calls:
                outcome = await tools.execute(
                    tool_call,
                    context=request.tool_context,
                    offered=offered,
                    invalid_json=tool_call.id in end.invalid_arguments,
                )
                yield ToolCalled(tool_call.name, tool_call.arguments, outcome.summary)
                messages.append(
                    ChatMessage(role="tool", content=outcome.content, tool_call_id=tool_call.id, name=tool_call.name)
                )
            turn_text = ""
            continue

        finish_reason = end.finish_reason
        incomplete = finish_reason in {"length", "tool_calls"}
        yield ChatResult("".join(answer), contributors, usage, incomplete=incomplete, finish_reason=finish_reason)
        return


def _offered_tools(request: ChatRequest) -> list[tools.ToolSpec]:
    """The request's tools this context may use (and only those: see tools.execute)."""
    offered: list[tools.ToolSpec] = []
    seen: set[str] = set()
    for spec in request.tools:
        if spec.name not in seen and tools.may_use(spec, request.tool_context):
            offered.append(spec)
            seen.add(spec.name)
    return offered


def _model_for(provider: Provider, request: ChatRequest, order: list[Provider]) -> str:
    """A bot's model is named for its chosen provider; any other provider uses its default."""
    if request.model and provider.name != "extractive":
        chosen = request.preferred_provider or order[0].name
        if provider.name == chosen:
            return request.model
    return provider.default_model()


async def _with_timeouts(events: AsyncIterator[ProviderEvent]) -> AsyncIterator[ProviderEvent]:
    """Enforce the first-token, stall and total timeouts on one provider's stream.

    Each wait is bounded on its own (never across a ``yield``), so a slow consumer
    cannot be cancelled by a provider's timer.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    total_deadline = started + settings.LLM_TOTAL_TIMEOUT
    deadline = min(started + settings.LLM_FIRST_TOKEN_TIMEOUT, total_deadline)
    waiting_for_first = True
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                if deadline >= total_deadline:
                    reason = f"no complete answer within {settings.LLM_TOTAL_TIMEOUT:g}s"
                elif waiting_for_first:
                    reason = f"no first token within {settings.LLM_FIRST_TOKEN_TIMEOUT:g}s"
                else:
                    reason = f"stalled: nothing for {settings.LLM_STALL_TIMEOUT:g}s"
                raise ProviderError(reason, retryable=True) from exc
            if isinstance(event, (TextDelta, Progress)):
                waiting_for_first = False
                deadline = min(loop.time() + settings.LLM_STALL_TIMEOUT, total_deadline)
            yield event
    finally:
        await events.aclose()


class _ContinuationJoiner:
    """Joins a continuation to the text the reader already has, without repeats.

    Asked to continue, models sometimes restate the last words (or the whole answer).
    The first few dozen characters are held back and any such overlap is cut.
    """

    def __init__(self, streamed: str, *, in_place: bool):
        self.streamed = streamed
        self.in_place = in_place
        self.streamed_core = streamed.strip()
        self.buffer = ""
        self.released = False

    def feed(self, text: str) -> str:
        if self.released:
            return text
        self.buffer += text
        if len(self.buffer) < CONTINUATION_LOOKAHEAD:
            return ""
        head = self.buffer.lstrip()
        if len(head) < len(self.streamed_core) and self.streamed_core.startswith(head):
            # Still restating the answer from its start: wait until it is past it.
            return ""
        return self._release()

    def flush(self) -> str:
        return "" if self.released else self._release()

    def _release(self) -> str:
        self.released = True
        text, self.buffer = self.buffer, ""
        return join_continuation(self.streamed, text, in_place=self.in_place)


def join_continuation(streamed: str, continuation: str, *, in_place: bool = False) -> str:
    """The part of ``continuation`` that is new after ``streamed``.

    ``in_place``: the continuation resumes inside the streamed text (a prefill), so a
    missing space means the model is finishing a word; otherwise it is a new message,
    which starts without the space that separates it from the last word.
    """
    if not continuation:
        return ""
    stripped = continuation.lstrip()
    streamed_core = streamed.strip()
    new = continuation
    if len(streamed_core) >= MIN_OVERLAP and stripped.startswith(streamed_core):
        # The model started the whole answer again.
        new = stripped[len(streamed_core) :]
    else:
        # The model restated the tail of what was streamed.
        for candidate in (continuation, stripped):
            size = _overlap(streamed, candidate)
            if size:
                new = candidate[size:]
                break
    if not new or not streamed or streamed[-1].isspace() or new[0].isspace():
        return new
    if streamed[-1] in ".!?:;," and new[0].isalnum():
        return " " + new
    if (
        not in_place
        and (streamed[-1].isalnum() or streamed[-1] in ".!?:;,)]\"'")
        and (new[0].isalnum() or new[0] in "([")
    ):
        return " " + new
    return new


def _overlap(streamed: str, candidate: str) -> int:
    """Length of the longest start of ``candidate`` (at least MIN_OVERLAP) that ends ``streamed``."""
    for size in range(min(len(candidate), len(streamed)), MIN_OVERLAP - 1, -1):
        if streamed.endswith(candidate[:size]):
            return size
    return 0
