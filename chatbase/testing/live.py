"""A real Daphne process serving the test database, for end-to-end tests.

The tests' database only exists inside the test run, so the server is pointed at
it with DATABASE_URL; with REDIS_URL it gets the run's key prefix and so shares
the channel layer with the test process. Data the test creates must be committed
(`django_db(transaction=True)`) for the server to see it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_url() -> str:
    db = connection.settings_dict
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db.get("PORT") else ""
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(db['USER'])}{password}@{host}{port}/{db['NAME']}"


class LiveDaphne:
    def __init__(self, *, env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log_path = Path(settings.VAR_DIR) / f"live-daphne-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env |= {
            "DJANGO_SETTINGS_MODULE": "chatbase.settings.test",
            "DATABASE_URL": test_database_url(),
            # Few connections: the tests' own process holds some too.
            "DB_POOL_MAX": "4",
        }
        if settings.REDIS_URL:
            env |= {"REDIS_URL": settings.REDIS_URL, "CHATBASE_TEST_REDIS_PREFIX": settings.REDIS_PREFIX}
        return env | self.extra_env

    def start(self, timeout: float = 60) -> LiveDaphne:
        limit = str(settings.WEBSOCKET_MAX_MESSAGE_BYTES)
        command = [
            sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
            "--websocket-max-message-size", limit, "--websocket-max-frame-size", limit,
            "chatbase.asgi:application",
        ]  # fmt: skip
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - the server writes it until stop()
        self.process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=self.environment(), stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Daphne did not answer /health within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()
