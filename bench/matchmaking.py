"""Matchmaking benchmark: the PostgreSQL queue and the fallback timer under a burst.

    .venv/bin/python bench/matchmaking.py [--users 1000] [--waiting 500] [--spread 5] [--bursts 10]
                                          [--fallback 3] [--servers N]

Real servers on 127.0.0.1: ChatBase under Daphne (local settings on the
`chatbase_bench` database; with REDIS_URL set, `--servers` defaults to 2 Daphne
processes sharing the queue through PostgreSQL and the channel layer through Redis,
and clients are spread across them), and the baseline: a bare single-process
websocket server (the `websockets` library) with an in-memory queue per pool and an
`asyncio` `call_later` timer per waiting user, speaking the same frames. One client
process drives both, in the same run:

* pairing: `--users` users (pre-connected) send `match.join` in `--bursts` bursts
  spread over `--spread` seconds. Reported: pairs formed per second (rooms / time
  from the first join to the last `match.found`), join-to-`match.found` latency,
  and the client-side check that there are zero double matches: every room has
  exactly two distinct users who name each other as peer, nobody is in two rooms or
  gets a second `match.found`, and nobody is left unpaired.
* fallback timer: `--waiting` users join the same way, each in a pool of its own
  (`pool` in `match.join`), so nobody can pair them and all of them wait for the
  timer: they go through the same queue code (ticket insert, pairing attempt,
  heartbeat) as everyone else and each gets `bot.connected` (ChatBase starts a real
  bot session for each). Error = (`bot.connected` received - `match.join` sent) -
  MATCH_FALLBACK_SECONDS, p50/p99. A bare `asyncio.sleep(fallback)` started in the
  client at each join measures the client's own lag under the same load.

Target on 2 cores: p99 timer error <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


# --- the baseline: a bare in-memory matchmaker ------------------------------------------
BOT_CONNECTED = json.dumps({"type": "bot.connected", "conversation_id": 0, "template": "", "welcome": ""})


async def serve_baseline(port: int, fallback: float) -> None:
    from websockets.asyncio.server import serve

    pools: dict[str, deque] = defaultdict(deque)

    async def handler(ws):
        entry = None
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") != "match.join":
                    continue
                name = (message.get("profile") or {}).get("name", "Someone")
                queue = pools[message.get("pool") or ""]
                await ws.send(json.dumps({"type": "match.waiting", "timeout_s": fallback}))
                while queue and queue[0]["closed"]:
                    queue.popleft()
                if queue:
                    other = queue.popleft()
                    other["timer"].cancel()
                    room = uuid.uuid4().hex
                    await other["ws"].send(json.dumps({"type": "match.found", "room": room, "peer": {"name": name}}))
                    await ws.send(json.dumps({"type": "match.found", "room": room, "peer": {"name": other["name"]}}))
                else:
                    entry = {"ws": ws, "name": name, "closed": False}
                    entry["timer"] = asyncio.get_running_loop().call_later(
                        fallback, lambda: asyncio.ensure_future(ws.send(BOT_CONNECTED))
                    )
                    queue.append(entry)
        finally:
            if entry is not None:
                entry["closed"] = True
                entry["timer"].cancel()

    async with serve(handler, "127.0.0.1", port, ping_interval=None):
        await asyncio.Future()


# --- the client ----------------------------------------------------------------------


class User:
    def __init__(self, url: str, user_id: str, pool: str = ""):
        self.url, self.user_id, self.pool = url, user_id, pool
        self.frames: list[tuple[float, dict]] = []
        self.outcome = asyncio.Event()
        self.sent = 0.0
        self.bare_timer_error: float | None = None

    async def open(self):
        self.ws = await websockets.connect(self.url, ping_interval=None, open_timeout=60, max_queue=None)
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                self.frames.append((time.monotonic(), frame))
                if frame["type"] in ("match.found", "bot.connected"):
                    self.outcome.set()
                elif frame["type"] == "error":
                    print(f"{self.user_id}: {frame}", file=sys.stderr)
        except websockets.ConnectionClosed:
            pass

    async def join(self, fallback: float):
        frame = {"type": "match.join", "user_id": self.user_id, "profile": {"name": self.user_id}}
        if self.pool:
            frame["pool"] = self.pool
        self.sent = time.monotonic()
        await self.ws.send(json.dumps(frame))
        # The baseline of the client itself: a bare timer started at the same moment.
        started = time.monotonic()
        await asyncio.sleep(fallback)
        self.bare_timer_error = time.monotonic() - started - fallback

    def first(self, frame_type: str) -> tuple[float, dict] | None:
        return next(((t, f) for t, f in self.frames if f["type"] == frame_type), None)

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


async def open_all(users: list[User]) -> None:
    semaphore = asyncio.Semaphore(100)

    async def one(user):
        async with semaphore:
            await user.open()

    await asyncio.gather(*(one(u) for u in users))


async def join_in_bursts(users: list[User], bursts: int, spread: float, fallback: float) -> list[asyncio.Task]:
    size = -(-len(users) // bursts)
    tasks = []
    start = time.monotonic()
    for b in range(bursts):
        await asyncio.sleep(max(0.0, start + b * spread / bursts - time.monotonic()))
        tasks += [asyncio.create_task(u.join(fallback)) for u in users[b * size : (b + 1) * size]]
    return tasks


async def pairing_phase(urls: list[str], count: int, bursts: int, spread: float, fallback: float) -> dict:
    tag = uuid.uuid4().hex[:6]
    users = [User(urls[i % len(urls)], f"p{tag}-{i}") for i in range(count)]
    await open_all(users)
    timers = await join_in_bursts(users, bursts, spread, fallback)
    await asyncio.wait_for(asyncio.gather(*(u.outcome.wait() for u in users)), spread + fallback + 60)
    await asyncio.gather(*timers)
    await asyncio.sleep(0.5)  # anything arriving late (a second match.found) is seen
    rooms: dict[str, list[tuple[str, str]]] = defaultdict(list)
    found_times, latencies, problems = [], [], []
    bots = 0
    for u in users:
        found = [(t, f) for t, f in u.frames if f["type"] == "match.found"]
        if len(found) > 1:
            problems.append(f"{u.user_id} got {len(found)} match.found")
        if found:
            t, f = found[0]
            rooms[f["room"]].append((u.user_id, f["peer"]["name"]))
            found_times.append(t)
            latencies.append(t - u.sent)
        if u.first("bot.connected"):
            bots += 1
    for room, members in rooms.items():
        ids = [m[0] for m in members]
        if len(members) != 2 or len(set(ids)) != 2:
            problems.append(f"room {room} has {ids}")
        elif members[0][1] != members[1][0] or members[1][1] != members[0][0]:
            problems.append(f"room {room}: peers do not name each other {members}")
    in_rooms = Counter(m[0] for members in rooms.values() for m in members)
    problems += [f"{user} in {n} rooms" for user, n in in_rooms.items() if n > 1]
    unpaired = count - len(in_rooms)
    first_join = min(u.sent for u in users)
    duration = max(found_times) - first_join if found_times else float("nan")
    await asyncio.gather(*(u.close() for u in users))
    return {
        "pairs": len(rooms),
        "pairs_per_s": len(rooms) / duration,
        "duration": duration,
        "latency_p50": pct(latencies, 50) * 1000,
        "latency_p99": pct(latencies, 99) * 1000,
        "double": len(problems),
        "problems": problems[:5],
        "unpaired": unpaired,
        "bots_before_human": bots,
    }


async def timer_phase(urls: list[str], count: int, bursts: int, spread: float, fallback: float) -> dict:
    tag = uuid.uuid4().hex[:6]
    users = [User(urls[i % len(urls)], f"t{tag}-{i}", pool=f"solo-{tag}-{i}") for i in range(count)]
    await open_all(users)
    timers = await join_in_bursts(users, bursts, spread, fallback)
    await asyncio.wait_for(asyncio.gather(*(u.outcome.wait() for u in users)), spread + fallback + 60)
    await asyncio.gather(*timers)
    errors = [(u.first("bot.connected")[0] - u.sent - fallback) * 1000 for u in users if u.first("bot.connected")]
    bare = [u.bare_timer_error * 1000 for u in users]
    matched = sum(1 for u in users if u.first("match.found"))
    await asyncio.gather(*(u.close() for u in users))
    return {
        "bots": len(errors),
        "matched": matched,
        "error_p50": pct(errors, 50),
        "error_p99": pct(errors, 99),
        "error_max": max(errors) if errors else float("nan"),
        "error_min": min(errors) if errors else float("nan"),
        "bare_p50": pct(bare, 50),
        "bare_p99": pct(bare, 99),
    }


# --- the servers ---------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.log = open(ROOT / "var" / f"bench-{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self.log.close()


async def wait_for(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, open_timeout=5):
                return
        except (OSError, websockets.InvalidStatus, websockets.InvalidMessage, TimeoutError):
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


async def drained(db_url: str | None, timeout: float = 180) -> None:
    """Until the server has removed every ticket of the sockets the last phase closed."""
    if db_url is None:
        await asyncio.sleep(1)
        return
    import psycopg

    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as connection:
        while time.monotonic() < deadline:
            cursor = await connection.execute("SELECT count(*) FROM conversations_matchticket")
            if (await cursor.fetchone())[0] == 0:
                break
            await asyncio.sleep(0.5)
    await asyncio.sleep(1)


def prepare_database() -> str:
    from bench._django import bench_database

    with bench_database():
        from urllib.parse import quote

        from django.db import connection

        from conversations.matchmaking.models import MatchRoom, MatchTicket
        from conversations.matchmaking.services import companion_bot

        # Leftovers of an interrupted run would be paired with this run's users.
        MatchTicket.objects.all().delete()
        MatchRoom.objects.all().delete()
        companion_bot()
        db = connection.settings_dict
        return f"postgres://{db['USER']}@{quote(db['HOST'], safe='')}/{db['NAME']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=500)
    parser.add_argument("--spread", type=float, default=5.0)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--fallback", type=float, default=3.0)
    parser.add_argument("--servers", type=int, default=2 if os.environ.get("REDIS_URL") else 1)
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        asyncio.run(serve_baseline(args.serve_baseline, args.fallback))
        return
    if args.servers > 1 and not os.environ.get("REDIS_URL"):
        parser.error("several servers need REDIS_URL (their sockets reach each other through Redis)")

    db_url = prepare_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    server_env = env | {
        "DJANGO_SETTINGS_MODULE": "chatbase.settings.local", "DEBUG": "false", "DATABASE_URL": db_url,
        "MATCH_FALLBACK_SECONDS": str(args.fallback), "MATCH_CONNECT_RATE_PER_IP": "1000000/min",
        "MATCH_JOIN_RATE_PER_USER": "1000/min", "LLM_PROVIDERS": "extractive", "LOG_LEVEL": "WARNING",
        "REDIS_PREFIX": f"bench-match-{os.getpid()}",
    }  # fmt: skip
    ports = [free_port() for _ in range(args.servers)]
    baseline_port = free_port()
    processes = [
        Process(
            f"match-daphne-{i}",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatbase.asgi:application"],
            server_env,
        )
        for i, port in enumerate(ports)
    ]
    processes.append(
        Process(
            "match-baseline",
            [
                sys.executable,
                str(Path(__file__)),
                "--serve-baseline",
                str(baseline_port),
                *("--fallback", str(args.fallback)),
            ],
            env,
        )
    )
    targets = {
        "bare in-memory matchmaker (1 process)": [f"ws://127.0.0.1:{baseline_port}/"],
        f"ChatBase ({args.servers} Daphne, {'Redis' if os.environ.get('REDIS_URL') else 'in-memory'} layer)": [
            f"ws://127.0.0.1:{port}/ws/match/" for port in ports
        ],
    }
    results: dict[str, tuple[dict, dict]] = {}
    try:

        async def run() -> None:
            for name, urls in targets.items():
                for url in urls:
                    await wait_for(url)
                await pairing_phase(urls, 100, 2, 0.5, args.fallback)  # warm up: pools, threads, caches
                await drained(db_url if "/ws/match/" in urls[0] else None)
                pairing = await pairing_phase(urls, args.users, args.bursts, args.spread, args.fallback)
                # The phases are measured apart: the servers first finish with the closed sockets.
                await drained(db_url if "/ws/match/" in urls[0] else None)
                timer = await timer_phase(urls, args.waiting, args.bursts, args.spread, args.fallback)
                results[name] = (pairing, timer)
                print(
                    f"{name:<44} pairs {pairing['pairs']:>4} in {pairing['duration']:.2f} s = "
                    f"{pairing['pairs_per_s']:6.1f}/s, join->found p50 {pairing['latency_p50']:7.1f} ms p99 "
                    f"{pairing['latency_p99']:7.1f} ms, double matches {pairing['double']}, unpaired "
                    f"{pairing['unpaired']}, bot first {pairing['bots_before_human']} | timer error p50 "
                    f"{timer['error_p50']:6.1f} ms p99 {timer['error_p99']:6.1f} ms (min {timer['error_min']:.1f}, "
                    f"max {timer['error_max']:.1f}) over {timer['bots']} fallbacks; client's bare sleep p99 "
                    f"{timer['bare_p99']:.1f} ms",
                    flush=True,
                )
                for problem in pairing["problems"]:
                    print("   ", problem)

        asyncio.run(run())
    finally:
        for process in processes:
            process.stop()

    (base_pair, base_timer), (pair, timer) = results.values()
    load = os.getloadavg()
    print(
        f"\n{args.users} users joining in {args.bursts} bursts over {args.spread:g} s; {args.waiting} users waiting "
        f"for a {args.fallback:g} s fallback; cpus={os.cpu_count()}, load average {load[0]:.1f} {load[1]:.1f}"
    )
    print(
        f"pairs per second: {pair['pairs_per_s']:.1f} = {pair['pairs_per_s'] / base_pair['pairs_per_s']:.2f}x the "
        f"bare matchmaker; join->found p99 {pair['latency_p99']:.1f} ms vs {base_pair['latency_p99']:.1f} ms"
    )
    print(f"double matches: {pair['double']} (bare: {base_pair['double']}); unpaired: {pair['unpaired']}")
    print(
        f"fallback timer error: p50 {timer['error_p50']:.1f} ms, p99 {timer['error_p99']:.1f} ms (target p99 <= "
        f"200 ms); bare matchmaker p99 {base_timer['error_p99']:.1f} ms "
        f"(+{timer['error_p99'] - base_timer['error_p99']:.1f} ms); the client's own bare sleep p99 "
        f"{timer['bare_p99']:.1f} ms"
    )


if __name__ == "__main__":
    main()
