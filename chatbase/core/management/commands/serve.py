"""`make run`: migrate, seed the demo, then run Daphne (+ Celery worker and beat with Redis).

A small supervisor rather than a Procfile runner: it needs nothing beyond the
project's own requirements, stops every child when one dies or on Ctrl-C, and
prints where everything is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from chatbase.core.demo import demo_seed


def daphne_command(host: str, port: int) -> list[str]:
    limit = str(settings.WEBSOCKET_MAX_MESSAGE_BYTES)
    return [
        sys.executable, "-m", "daphne",
        "-b", host, "-p", str(port),
        "--websocket-max-message-size", limit,
        "--websocket-max-frame-size", limit,
        "chatbase.asgi:application",
    ]  # fmt: skip


def celery_commands() -> list[tuple[str, list[str]]]:
    celery = [sys.executable, "-m", "celery", "-A", "chatbase"]
    return [
        ("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", str(os.cpu_count() or 2)]),
        ("beat", [*celery, "beat", "--loglevel", "INFO", "--scheduler", settings.CELERY_BEAT_SCHEDULER]),
    ]


class Command(BaseCommand):
    help = "Migrate, seed the demo and run Daphne, plus a Celery worker and beat when REDIS_URL is set."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--no-seed", action="store_true")

    def handle(self, *args, host, port, no_seed, **options):
        call_command("migrate", interactive=False, verbosity=0)
        demo = None if no_seed else demo_seed()

        env = os.environ.copy()
        if settings.REDIS_URL:
            # Daphne, the worker and beat each count their own metrics; /metrics adds
            # them up from files in this directory, which must start empty.
            metrics_dir = settings.VAR_DIR / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        children: list[tuple[str, subprocess.Popen]] = [
            ("daphne", subprocess.Popen(daphne_command(host, port), env=env))
        ]
        if settings.REDIS_URL:
            children += [(name, subprocess.Popen(cmd, env=env)) for name, cmd in celery_commands()]
        self._print_banner(host, port, demo)

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with code {proc.returncode}; stopping the others.")
                    exit_code = proc.returncode or 1
                    stopping = True
            time.sleep(0.5)
        for _, proc in children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for _, proc in children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(exit_code)

    def _print_banner(self, host, port, demo):
        wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - only to print a clickable URL
        base = f"http://{'127.0.0.1' if wildcard else host}:{port}"
        lines = [
            "",
            "ChatBase is running.",
            f"  Demo page:  {base}/demo/",
            f"  Admin:      {base}/admin/",
            f"  API docs:   {base}/api/docs/",
            f"  Health:     {base}/health",
        ]
        if demo is not None:
            lines += [
                f"  Admin login: {demo.admin_email} / {demo.admin_password}"
                + ("  (changed since seeding)" if demo.admin_password_changed else ""),
                f"  Demo API token ({demo.owner_email}): {demo.api_token}",
            ]
        mode = (
            "Redis at REDIS_URL, with a Celery worker and beat"
            if settings.REDIS_URL
            else ("no Redis: in-memory channel layer and cache, tasks run in-process")
        )
        db = f"embedded PostgreSQL under {settings.VAR_DIR / 'pg'}" if settings.EMBEDDED_DATABASE else "DATABASE_URL"
        lines += [f"  Database:   {db}", f"  Mode:       {mode}", "Press Ctrl-C to stop.", ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
