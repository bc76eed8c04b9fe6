"""Fixtures of the fault suite: real servers that the tests break on purpose."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time

import pytest
import websockets

from bots.services.documents import document_create
from bots.tests.factories import BotFactory
from chatbase.testing.live import free_port

ORIGIN = "https://shop.example.com"
REFUNDS = "Refunds are paid within 14 days of receiving the returned item. Items must be unused."
SHIPPING = "Orders ship within two working days. Express delivery costs 9 euros."


class PrivateRedis:
    """A redis-server of this test's own, so stopping it disturbs nobody else."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (.ci/run installs it)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def private_redis():
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture
def shop_bot(transactional_db, media_root):
    bot = BotFactory(name="Shop helper", allowed_origins=[ORIGIN], welcome_message="Hello!")
    document_create(bot=bot, title="Returns policy", text=REFUNDS)
    document_create(bot=bot, title="Shipping", text=SHIPPING)
    bot.refresh_from_db()
    return bot


async def ask(ws, text: str, client_id: str, timeout: float = 90) -> list[dict]:
    """Send one message; return every frame up to its answer.done or error."""
    await ws.send(json.dumps({"type": "message.send", "text": text, "client_id": client_id}))
    frames: list[dict] = []
    while not frames or frames[-1]["type"] not in ("answer.done", "error"):
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return frames


def chat_url(server, bot, visitor: str | None = None) -> str:
    url = f"{server.ws_url}/ws/chat/{bot.public_key}/"
    return f"{url}?visitor={visitor}" if visitor else url


async def connect(server, bot, visitor: str | None = None):
    ws = await websockets.connect(chat_url(server, bot, visitor), origin=ORIGIN)
    ready = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert ready["type"] == "session.ready", ready
    return ws, ready
