"""Fixtures shared by every app's tests."""

from __future__ import annotations

import os

import pytest
from django.conf import settings


def pytest_collection_modifyitems(config, items):
    skip_redis = pytest.mark.skip(reason="REDIS_URL is not set (CI runs the suite once with Redis)")
    skip_slow = pytest.mark.skip(reason="slow set-up test: set CHATBASE_SLOW_TESTS=1 (CI does)")
    run_slow = os.environ.get("CHATBASE_SLOW_TESTS") == "1"
    for item in items:
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
