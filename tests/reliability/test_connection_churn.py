"""500 visitor sockets opened and closed ten times: the server's memory stays flat."""

from __future__ import annotations

import asyncio
import json

import psutil
import pytest
import websockets

from tests.reliability.conftest import ORIGIN, chat_url

pytestmark = pytest.mark.django_db(transaction=True)

SOCKETS = 500
ROUNDS = 10


async def churn(url: str) -> int:
    """Open SOCKETS chat sockets (each gets its session.ready), then close them all."""
    gate = asyncio.Semaphore(10)  # bounded: Daphne drops handshakes not accepted in 5 s

    async def open_one():
        async with gate:
            ws = await websockets.connect(url, origin=ORIGIN, open_timeout=60)
            ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert ready["type"] == "session.ready"
            return ws

    sockets = await asyncio.gather(*(open_one() for _ in range(SOCKETS)))
    await asyncio.gather(*(ws.close() for ws in sockets))
    return len(sockets)


# Minutes of work, so it runs once per CI run (the first pass), not in both.
@pytest.mark.slow
def test_memory_stays_flat_over_ten_rounds_of_500_sockets(shop_bot, live_daphne):
    server = live_daphne(
        env={
            "CHAT_CONNECT_RATE_PER_IP": "1000000/min",
            # No question is asked: do not load the embedding model mid-measurement.
            "EMBEDDINGS_WARM_UP": "false",
        }
    )
    process = psutil.Process(server.process.pid)
    url = chat_url(server, shop_bot)

    async def run() -> list[int]:
        samples = []
        for _ in range(ROUNDS):
            assert await churn(url) == SOCKETS
            await asyncio.sleep(0.5)  # let closes finish
            samples.append(process.memory_info().rss)
        return samples

    samples = asyncio.run(run())
    # The first round pays for imports, pools and caches that are then reused.
    baseline, final = samples[0], samples[-1]
    growth = (final - baseline) / baseline
    print(f"RSS after each round (MiB): {[round(s / 2**20, 1) for s in samples]}; growth {growth:.2%}")
    assert growth < 0.05, f"memory grew {growth:.1%} over {ROUNDS} rounds of {SOCKETS} sockets"
