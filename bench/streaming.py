"""Streaming benchmark: what ChatBase adds between the model and the visitor.

    .venv/bin/python bench/streaming.py [--streams 100] [--tokens 100] [--ttft 200] [--idle 2000]

Three processes on 127.0.0.1: the fake OpenAI server (`chatbase.testing.fake_llm`,
50 tokens/s, every token stamped with the wall-clock time it was written), ChatBase
under Daphne (local settings on the `chatbase_bench` database, a bot with 10,000
chunks), and the baseline: a bare ASGI websocket relay under uvicorn
(`bench/_relay.py`) forwarding the same fake stream. The same websocket client
measures both in the same run: picows (`--client picows`, the default), which parses
and times every frame in C-speed code inside the socket's read callback, so that its
own delay is not counted as the servers'; `--client websockets` is the client of the
earlier figures in docs/performance.md, which woke a coroutine per frame and whose
own CPU, on the same 2 cores, showed up in both servers' latencies.

* per-token latency (token written by the fake -> frame received by the client) at
  `--streams` concurrent streams;
* time to first token (message sent -> first delta), one request at a time, which
  for ChatBase includes storing the message, embedding the question, retrieval over
  10,000 chunks, prompt assembly and the model call; the fake answers at once, so
  this is what the platform adds (the fake is told to answer in 5 tokens for this
  phase, so that 200 sequential questions take seconds, not 2 s of streaming each);
* memory per idle connection: server RSS growth over `--idle` open sockets.

Targets on 2 cores: added per-token p99 <= 5 ms and <= 2x the bare relay; added
time to first token p50 <= 15 ms, p99 <= 50 ms; memory per idle connection <= 3x
the bare relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import picows
import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._django import bench_database  # noqa: E402

ORIGIN = "http://127.0.0.1"
CHUNKS = 10_000
TTFT_TOKENS = 5
CLIENT = "picows"  # --client


def fake_answer(upstream: str, tokens: int) -> None:
    """Tell the fake server (another process) how long its answers are from now on."""
    import httpx

    base = upstream.removesuffix("/v1")
    answer = {"tokens": tokens, "tokens_per_second": 50, "stamp": True}
    httpx.post(f"{base}/_fake/default", json=answer).raise_for_status()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def prepare_bot():
    """A bot with 10,000 chunks (synthetic vectors, Zipf texts), created once and kept."""
    from django.db import connection
    from pgvector.psycopg import register_vector

    from bench.retrieval import chunk_text, clustered_vectors
    from bots.models import Bot, Document
    from chatbase.core.services import user_get_or_create

    owner, _ = user_get_or_create(email="bench-streaming@chatbase.local")
    bot = Bot.objects.filter(owner=owner, name="streaming").first()
    if bot is not None and bot.chunk_count == CHUNKS:
        Bot.objects.filter(pk=bot.pk).update(allowed_origins=[ORIGIN])
        return bot
    Bot.objects.filter(owner=owner).delete()
    bot = Bot.objects.create(owner=owner, name="streaming", allowed_origins=[ORIGIN], chunk_count=CHUNKS)
    document = Document.objects.create(bot=bot, title="Bench corpus", source_type="text", status="ready")
    rng = np.random.default_rng(11)
    centroids = rng.normal(0, 1, size=(100, 384))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    vectors = clustered_vectors(CHUNKS, rng, centroids)
    connection.ensure_connection()
    register_vector(connection.connection)
    with connection.connection.cursor() as cursor:
        with cursor.copy(
            "COPY bots_chunk (bot_id, document_id, position, text, token_count, text_hash, embedding, metadata) "
            "FROM STDIN"
        ) as copy:
            for position in range(CHUNKS):
                copy.write_row((bot.pk, document.pk, position, chunk_text(rng), 40, f"s{position}",
                                vectors[position], "{}"))  # fmt: skip
        cursor.execute("ANALYZE bots_chunk")
    connection.connection.commit()
    return bot


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{quote(db['HOST'], safe='')}/{db['NAME']}"


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.log = open(ROOT / "var" / f"bench-{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def rss(self) -> int:
        return psutil.Process(self.popen.pid).memory_info().rss

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self.log.close()


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def wait_for_socket(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, origin=ORIGIN) as ws:
                await ws.recv()
                return
        except (OSError, websockets.InvalidStatus, websockets.InvalidMessage):
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


class _Stream(picows.WSListener):
    """One question's frames, timed and parsed inside the socket's read callback: no
    coroutine is woken per token, so the client adds next to nothing to what it measures."""

    def __init__(self, latencies, ttft, started):
        loop = asyncio.get_running_loop()
        self.ready, self.done = loop.create_future(), loop.create_future()
        self.latencies, self.ttft, self.started = latencies, ttft, started
        self.sent: float | None = None
        self.tokens = 0

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        received = time.time()
        if frame.msg_type == picows.WSMsgType.CLOSE:
            self._fail(ConnectionError(f"closed by the server ({frame.get_close_code()})"))
            return
        if frame.msg_type != picows.WSMsgType.TEXT or not frame.fin:
            self._fail(RuntimeError(f"unexpected frame {frame.msg_type!r} (fin={frame.fin})"))
            return
        data = json.loads(frame.get_payload_as_utf8_text())
        kind = data.get("type")
        if kind == "answer.delta":
            if self.tokens == 0:
                if self.ttft is not None:
                    self.ttft.append(received - self.sent)
                if self.started is not None:
                    self.started.append(received)
            self.tokens += 1
            if self.latencies is not None:
                emitted = float(data["delta"].strip())
                self.latencies.append((emitted, received - emitted))
        elif kind == "session.ready" and not self.ready.done():
            self.ready.set_result(data)
        elif kind == "answer.done" and not self.done.done():
            self.done.set_result(self.tokens)
        elif kind == "error":
            self._fail(RuntimeError(data))

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self._fail(ConnectionError("disconnected"))

    def _fail(self, exc: Exception) -> None:
        for future in (self.ready, self.done):
            if not future.done():
                future.set_exception(exc)


async def one_stream(
    url: str, text: str, latencies: list[tuple[float, float]] | None, ttft: list[float] | None,
    started: list[float] | None = None,
) -> int:  # fmt: skip
    if CLIENT == "websockets":
        return await _one_stream_websockets(url, text, latencies, ttft, started)
    transport, stream = await picows.ws_connect(
        lambda: _Stream(latencies, ttft, started), url, extra_headers={"Origin": ORIGIN}, max_frame_size=2**20
    )
    try:
        await asyncio.wait_for(asyncio.shield(stream.ready), 30)
        stream.sent = time.time()
        transport.send(picows.WSMsgType.TEXT, json.dumps({"type": "message.send", "text": text}).encode())
        return await asyncio.wait_for(asyncio.shield(stream.done), 60)
    finally:
        transport.send_close(picows.WSCloseCode.OK)
        transport.disconnect()


async def _one_stream_websockets(
    url: str, text: str, latencies: list[tuple[float, float]] | None, ttft: list[float] | None,
    started: list[float] | None = None,
) -> int:  # fmt: skip
    """The first client of this benchmark (pure-Python frame parsing, a coroutine woken
    per frame), kept to compare with figures measured with it (`--client websockets`)."""
    async with websockets.connect(url, origin=ORIGIN, max_size=2**20) as ws:
        await ws.recv()  # session.ready
        sent = time.time()
        await ws.send(json.dumps({"type": "message.send", "text": text}))
        first = True
        tokens = 0
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            received = time.time()
            if frame["type"] == "answer.delta":
                if first and ttft is not None:
                    ttft.append(received - sent)
                if first and started is not None:
                    started.append(received)
                first = False
                tokens += 1
                if latencies is not None:
                    emitted = float(frame["delta"].strip())
                    latencies.append((emitted, received - emitted))
            elif frame["type"] == "answer.done":
                return tokens
            elif frame["type"] == "error":
                raise RuntimeError(frame)


async def per_token(
    url: str, streams: int, timeline: str = "", first_tokens: list[float] | None = None
) -> tuple[list[float], list[float], int]:
    """(every token's latency, the latencies once every stream is running, tokens).

    `timeline`: a name to print the latencies under, by when the token was written.
    `first_tokens`: gets each stream's time to first token (all sent at once)."""
    latencies: list[tuple[float, float]] = []
    started: list[float] = []
    counts = await asyncio.gather(
        *(one_stream(url, f"question {i} about the policy", latencies, first_tokens, started) for i in range(streams))
    )
    # Steady state: tokens written after the last stream's first token, i.e. once no
    # stream is still being set up (storing, embedding, retrieval) next to them.
    all_running = max(started)
    steady = [latency for emitted, latency in latencies if emitted > all_running]
    if timeline:
        print_timeline(timeline, latencies, all_running)
    return [latency for _, latency in latencies], steady, sum(counts)


def print_timeline(name: str, latencies: list[tuple[float, float]], all_running: float, step: float = 0.25) -> None:
    """Per-token latency by when the token was written (`--timeline`): shows how much
    of the whole run's tail comes from the burst of simultaneous set-ups."""
    start = min(emitted for emitted, _ in latencies)
    bins: dict[int, list[float]] = {}
    for emitted, latency in latencies:
        bins.setdefault(int((emitted - start) / step), []).append(latency * 1000)
    print(f"{name}: per-token latency by when the token was written (every stream running from "
          f"{all_running - start:.2f} s)")  # fmt: skip
    for index in sorted(bins):
        values = bins[index]
        print(f"  {index * step:5.2f} s  {len(values):5d} tokens  p50 {pct(values, 50):7.1f} ms  p99 "
              f"{pct(values, 99):7.1f} ms")  # fmt: skip


async def time_to_first_token(url: str, requests: int) -> list[float]:
    ttft: list[float] = []
    for i in range(requests):
        # Every question is new: a repeated one would come from the embedding cache.
        await one_stream(url, f"what does the document say about w{i} and w{i + 7}?", None, ttft)
    return ttft


async def idle_memory(url: str, process: Process, count: int) -> float:
    before = process.rss()
    sockets = []
    semaphore = asyncio.Semaphore(50)

    async def open_one():
        async with semaphore:
            ws = await websockets.connect(url, origin=ORIGIN, ping_interval=None)
            await ws.recv()
            sockets.append(ws)

    await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.sleep(2)
    after = process.rss()
    await asyncio.gather(*(ws.close() for ws in sockets))
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--ttft", type=int, default=200)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--timeline", action="store_true", help="print per-token latency by when it was written")
    parser.add_argument(
        "--client", choices=["picows", "websockets"], default="picows",
        help="the measuring websocket client (idle sockets are opened with websockets either way)",
    )  # fmt: skip
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client
    logging.getLogger("picows").setLevel(logging.WARNING)  # a line per connection otherwise

    with bench_database():
        bot = prepare_bot()
        db_url = database_url()
    fake_port, daphne_port, relay_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    fake = Process(
        "fake-llm",
        [sys.executable, "-m", "chatbase.testing.fake_llm", "--port", str(fake_port), "--tokens-per-second", "50",
         "--tokens", str(args.tokens), "--stamp"],
        env,
    )  # fmt: skip
    wait_for_port(fake_port)
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    daphne = Process(
        "daphne",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(daphne_port), "chatbase.asgi:application"],
        env | {
            "DJANGO_SETTINGS_MODULE": "chatbase.settings.local", "DEBUG": "false", "DATABASE_URL": db_url,
            "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream, "LLM_PROVIDERS": "openai,extractive",
            "CHAT_RATE_PER_VISITOR": "100000/min", "CHAT_RATE_PER_IP": "100000/min",
            "CHAT_CONNECT_RATE_PER_IP": "100000/min", "DB_POOL_MAX": "20", "LOG_LEVEL": "WARNING",
        },
    )  # fmt: skip
    relay = Process(
        "relay",
        [sys.executable, "-m", "uvicorn", "bench._relay:app", "--port", str(relay_port), "--log-level", "warning",
         "--ws", "websockets"],
        env | {"RELAY_UPSTREAM": upstream},
    )  # fmt: skip
    targets = {
        "bare relay (uvicorn)": (f"ws://127.0.0.1:{relay_port}/", relay),
        "ChatBase (Daphne)": (f"ws://127.0.0.1:{daphne_port}/ws/chat/{bot.public_key}/", daphne),
    }
    results: dict[str, dict] = {}
    try:

        async def run() -> None:
            for name, (url, process) in targets.items():
                await wait_for_socket(url)
                fake_answer(upstream, args.tokens)
                await per_token(url, 10)  # warm up: connections, pools, the embedding model
                cpu = time.process_time()
                burst_ttft: list[float] = []
                latencies, steady, tokens = await per_token(
                    url, args.streams, name if args.timeline else "", first_tokens=burst_ttft
                )
                client_cpu_us = (time.process_time() - cpu) / max(len(latencies), 1) * 1e6
                fake_answer(upstream, TTFT_TOKENS)
                await time_to_first_token(url, 5)
                ttft = await time_to_first_token(url, args.ttft)
                memory = await idle_memory(url, process, args.idle)
                ms = [x * 1000 for x in latencies]
                steady_ms = [x * 1000 for x in steady] or ms
                results[name] = {
                    "tokens": tokens,
                    "token_p50": pct(ms, 50),
                    "token_p99": pct(ms, 99),
                    "steady_p50": pct(steady_ms, 50),
                    "steady_p99": pct(steady_ms, 99),
                    "ttft_p50": pct([x * 1000 for x in ttft], 50),
                    "ttft_p99": pct([x * 1000 for x in ttft], 99),
                    "idle_kb": memory / 1024,
                    "client_us": client_cpu_us,
                    "burst_ttft_p50": pct([x * 1000 for x in burst_ttft], 50),
                    "burst_ttft_p99": pct([x * 1000 for x in burst_ttft], 99),
                }
                r = results[name]
                print(
                    f"{name:<22} {r['tokens']:>6} tokens  per-token p50 {r['token_p50']:6.2f} ms  p99 "
                    f"{r['token_p99']:6.2f} ms (all streams running: p50 {r['steady_p50']:6.2f}  p99 "
                    f"{r['steady_p99']:6.2f}) | first token p50 {r['ttft_p50']:6.2f} ms  p99 {r['ttft_p99']:6.2f} ms"
                    f" | {r['idle_kb']:6.1f} KB per idle connection | client CPU {r['client_us']:.0f} us per token"
                    f" | first token of the {args.streams} sent at once p50 {r['burst_ttft_p50']:.0f} ms"
                    f" p99 {r['burst_ttft_p99']:.0f} ms",
                    flush=True,
                )

        asyncio.run(run())
    finally:
        for process in (daphne, relay, fake):
            process.stop()

    base, ours = results["bare relay (uvicorn)"], results["ChatBase (Daphne)"]
    print(
        f"\n{args.streams} concurrent streams at 50 tokens/s, {args.ttft} sequential first tokens "
        f"(bot with {CHUNKS:,} chunks), {args.idle} idle connections; cpus={os.cpu_count()}; client {CLIENT}"
    )
    print(f"per-token p99: {ours['token_p99']:.2f} ms = {ours['token_p99'] / base['token_p99']:.2f}x the bare relay; "
          f"with every stream running {ours['steady_p99']:.2f} ms = {ours['steady_p99'] / base['steady_p99']:.2f}x "
          f"(target <= 5 ms and <= 2x)")  # fmt: skip
    print(f"time to first token: p50 {ours['ttft_p50']:.2f} ms, p99 {ours['ttft_p99']:.2f} ms; added over the bare "
          f"relay p50 {ours['ttft_p50'] - base['ttft_p50']:.2f} ms, p99 {ours['ttft_p99'] - base['ttft_p99']:.2f} ms "
          f"(bare relay p50 {base['ttft_p50']:.2f} ms; target p50 <= 15 ms, p99 <= 50 ms)")  # fmt: skip
    print(f"first token of {args.streams} questions sent at once: p50 {ours['burst_ttft_p50']:.0f} ms, p99 "
          f"{ours['burst_ttft_p99']:.0f} ms (bare relay p50 {base['burst_ttft_p50']:.0f} ms, p99 "
          f"{base['burst_ttft_p99']:.0f} ms; CHAT_PREPARE_CONCURRENCY queues them: no target)")  # fmt: skip
    print(f"memory per idle connection: {ours['idle_kb']:.1f} KB = {ours['idle_kb'] / max(base['idle_kb'], 0.1):.2f}x "
          f"the bare relay (target <= 3x)")  # fmt: skip


if __name__ == "__main__":
    main()
