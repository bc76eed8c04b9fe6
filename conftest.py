"""Fixtures shared by every app's tests."""

from __future__ import annotations

import io
import logging
import os

import pytest
from django.conf import settings


@pytest.fixture(scope="session", autouse=True)
def _close_database_connections(django_db_setup, django_db_blocker):
    """Let the test database be dropped at the end of the run.

    channels' test communicator replaces close_old_connections with a no-op while it
    runs a consumer, so worker threads keep their connections open (and the pool
    keeps its own): close the pools, then end any session still on the database.
    """
    yield
    import psycopg
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            if hasattr(connection, "close_pool"):
                connection.close_pool()
        params = connections["default"].get_connection_params()
        name = params.pop("dbname")
        params.pop("pool", None)
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )


def _restore_migration_data_after_flush(item) -> None:
    """Give every transactional test the rows the migrations created.

    A transactional test ends with a flush, which also deletes what data migrations
    shipped (prompt templates, service areas, beat schedules); the next test would
    silently run without them. Serialised rollback reloads them before each one.
    """
    marker = item.get_closest_marker("django_db")
    fixtures = getattr(item, "fixturenames", ())
    uses_fixture = "transactional_db" in fixtures or "live_server" in fixtures
    if marker is None and not uses_fixture:
        return
    kwargs = dict(marker.kwargs) if marker is not None else {}
    if not (kwargs.get("transaction") or uses_fixture):
        return
    kwargs.update(transaction=True, serialized_rollback=True)
    # First, so that get_closest_marker (what pytest-django reads) finds this one and
    # not a test's own @pytest.mark.django_db(transaction=True).
    item.add_marker(pytest.mark.django_db(**kwargs), append=False)


def pytest_collection_modifyitems(config, items):
    skip_redis = pytest.mark.skip(reason="REDIS_URL is not set (CI runs the suite once with Redis)")
    skip_slow = pytest.mark.skip(reason="slow set-up test: set CHATBASE_SLOW_TESTS=1 (CI does)")
    run_slow = os.environ.get("CHATBASE_SLOW_TESTS") == "1"
    for item in items:
        _restore_migration_data_after_flush(item)
        if "redis" in item.keywords and not os.environ.get("REDIS_URL"):
            item.add_marker(skip_redis)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)


@pytest.fixture
def owner(db):
    from chatbase.core.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def other_owner(db):
    from chatbase.core.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def owner_client(owner):
    """An APIClient authenticated with a real bearer token of `owner`."""
    from rest_framework.test import APIClient

    from chatbase.core.services import api_token_create

    _, raw = api_token_create(user=owner, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.user = owner
    return client


@pytest.fixture
def staff_client(client, django_user_model):
    """A test client logged in as a superuser (the Django admin)."""
    staff = django_user_model.objects.create_superuser(email="staff@example.com", password="pw")  # noqa: S106
    client.force_login(staff)
    return client


@pytest.fixture
def media_root(settings, tmp_path):
    """Uploaded files of this test go to a folder of their own, so tests can list what was stored."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def captured_logs():
    """Everything logged, formatted by the project's formatters (plain and JSON)."""
    from chatbase.core.logging import JsonFormatter, RedactingFormatter, RequestIdFilter

    plain, structured = io.StringIO(), io.StringIO()
    handlers = []
    for stream, formatter in (
        (plain, RedactingFormatter("%(levelname)s %(name)s [%(request_id)s] %(message)s")),
        (structured, JsonFormatter()),
    ):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        handlers.append(handler)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    yield lambda: (plain.getvalue(), structured.getvalue())
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    yield
    # Rate limits and cached lookups must not leak from one test into the next.
    if not settings.REDIS_URL:
        cache.clear()
        return
    # cache.clear() would FLUSHDB a Redis that other runs share: delete only this run's keys.
    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
    if keys:
        client.delete(*keys)


# The fake OpenAI/Anthropic server (a real socket) for every app's tests.
from chatbase.testing.fake_llm import fake_llm_fixture, fake_llm_server_fixture  # noqa: E402, F401


@pytest.fixture
def live_daphne(transactional_db):
    """A real Daphne process on the test database; `live_daphne(env={...})` to configure it."""
    from chatbase.testing.live import LiveDaphne

    servers = []

    def start(env: dict | None = None):
        server = LiveDaphne(env=env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
