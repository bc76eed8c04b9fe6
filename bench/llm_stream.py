"""Streaming benchmark of the provider layer against the fake LLM server.

    .venv/bin/python bench/llm_stream.py [--streams 100] [--tokens 100] [--rate 50] [--rounds 3]

Each measurement runs the real path (`bots.llm.stream_chat`: router, timeouts,
provider, SDK request) and two baselines in the same run, on the same fake stream
and the same SDK client:

* "floor": the SDK's raw streaming response read with `json.loads`, as the
  providers do, without the router: what the router adds is the difference;
* "SDK models": the SDK's own stream iterator (a pydantic model per chunk), the
  obvious implementation the providers avoid.

Measurements:

* paced: `--streams` concurrent answers at `--rate` tokens/s, the chat load the
  lead's websocket benchmark uses. Reported: how late each token arrives against the
  stream's own ideal clock (the earliest start consistent with its arrivals), p50/p99,
  and the p99 ratio to the floor. Includes the fake server's per-token cost (it runs
  in this process, as in the tests).
* unpaced: 20 answers of 500 tokens as fast as possible (best of `--rounds`):
  tokens per second and microseconds per token, against the floor.

The fake server runs in its own thread, as in the tests; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.test")

import django

django.setup()

from django.test import override_settings  # noqa: E402

from bots.llm import ChatMessage, ChatRequest, TextDelta, stream_chat  # noqa: E402
from bots.llm.clients import aclose_clients, openai_client  # noqa: E402
from bots.llm.providers.sse import parse_json, sse_events  # noqa: E402
from chatbase.testing.fake_llm import FakeLLMServer, Script  # noqa: E402


def answer(tokens: int) -> str:
    return " ".join(f"tok{i}" for i in range(tokens))


def request(provider: str) -> ChatRequest:
    return ChatRequest(
        system_prompt="You are a benchmark.",
        messages=[ChatMessage(role="user", content="Stream please.")],
        preferred_provider=provider,
    )


async def via_router(provider: str, arrivals: list[float]) -> None:
    async for event in stream_chat(request(provider)):
        if isinstance(event, TextDelta):
            arrivals.append(time.perf_counter())


BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Stream please."}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def via_sdk_models(arrivals: list[float]) -> None:
    stream = await openai_client().chat.completions.create(**BODY)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())


async def via_floor(arrivals: list[float]) -> None:
    async with openai_client().chat.completions.with_streaming_response.create(**BODY) as response:
        async for _, data in sse_events(response.iter_lines()):
            if data.startswith("[DONE]"):
                break
            chunk = parse_json(data)
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                arrivals.append(time.perf_counter())


PATHS = {
    "floor": ("floor: raw SDK response", via_floor),
    "models": ("SDK models iterator", via_sdk_models),
    "openai": ("stream_chat -> openai", None),
    "anthropic": ("stream_chat -> anthropic", None),
}


async def run(kind: str, streams: int) -> list[list[float]]:
    all_arrivals: list[list[float]] = [[] for _ in range(streams)]
    direct = PATHS[kind][1]
    if direct is not None:
        jobs = [direct(arrivals) for arrivals in all_arrivals]
    else:
        jobs = [via_router(kind, arrivals) for arrivals in all_arrivals]
    await asyncio.gather(*jobs)
    return all_arrivals


def lateness_ms(all_arrivals: list[list[float]], rate: float) -> list[float]:
    late = []
    for arrivals in all_arrivals:
        start = min(t - i / rate for i, t in enumerate(arrivals))
        late += [(t - (start + i / rate)) * 1000 for i, t in enumerate(arrivals)]
    return late


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args) -> None:
    server = FakeLLMServer().start()
    overrides = {
        "OPENAI_BASE_URL": server.openai_base_url,
        "OPENAI_API_KEY": "sk-bench",
        "ANTHROPIC_BASE_URL": server.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "LLM_PROVIDERS": ["openai", "anthropic", "extractive"],
    }
    try:
        with override_settings(**overrides):
            print(f"paced: {args.streams} streams x {args.tokens} tokens at {args.rate:g} tokens/s")
            # Warm-up: open every pooled connection first, so no path pays for them.
            server.openai.default = server.anthropic.default = Script(text="warm")
            for kind in ("floor", "anthropic"):
                await run(kind, args.streams)
            paced = Script(text=answer(args.tokens), tokens_per_second=args.rate)
            server.openai.default = server.anthropic.default = paced
            results = {}
            for kind in PATHS:
                arrivals = await run(kind, args.streams)
                assert all(len(a) == args.tokens for a in arrivals), kind
                late = lateness_ms(arrivals, args.rate)
                results[kind] = (percentile(late, 0.5), percentile(late, 0.99))
            floor99 = results["floor"][1]
            print(f"  {'path':<30} {'p50 late ms':>12} {'p99 late ms':>12} {'p99 / floor':>12}")
            for kind, (label, _) in PATHS.items():
                p50, p99 = results[kind]
                print(f"  {label:<30} {p50:>12.2f} {p99:>12.2f} {p99 / max(floor99, 0.01):>12.2f}")

            streams, tokens = 20, 500
            print(f"unpaced: {streams} streams x {tokens} tokens, as fast as possible, best of {args.rounds}")
            server.openai.default = server.anthropic.default = Script(text=answer(tokens))
            rates = dict.fromkeys(PATHS, 0.0)
            # Best of a few interleaved rounds: the machine is shared, noise only slows.
            for _ in range(args.rounds):
                for kind in PATHS:
                    started = time.perf_counter()
                    await run(kind, streams)
                    rates[kind] = max(rates[kind], streams * tokens / (time.perf_counter() - started))
            floor = rates["floor"]
            print(f"  {'path':<30} {'tokens/s':>12} {'us/token':>12} {'cost / floor':>12}")
            for kind, (label, _) in PATHS.items():
                rate = rates[kind]
                print(f"  {label:<30} {rate:>12.0f} {1e6 / rate:>12.1f} {floor / rate:>12.2f}")
            print(f"  router over the floor: {1e6 / rates['openai'] - 1e6 / floor:+.1f} us/token (openai)")
            await aclose_clients()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments))
