"""Dependency checks behind /ready.

Each check returns "ok" or a short reason; a check that is not configured is
reported as "disabled" only when it is optional, never silently skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_redis() -> str:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_broker() -> str:
    """The Celery broker accepts a connection (tasks would otherwise pile up unsent)."""
    from chatbase.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)
    return "ok"


def registered_checks() -> dict[str, Callable[[], str]]:
    checks: dict[str, Callable[[], str]] = {"database": check_database}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = check_broker
    return checks


def run_checks() -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in registered_checks().items():
        try:
            results[name] = check()
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            logger.warning("readiness check %s failed: %s", name, exc)
            results[name] = f"error: {type(exc).__name__}"
    if not settings.REDIS_URL:
        results["redis"] = "disabled"
    if settings.CELERY_TASK_ALWAYS_EAGER:
        results["broker"] = "disabled"  # tasks run in-process
    return results
