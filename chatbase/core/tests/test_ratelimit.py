"""Rate limits: counted in Django's cache, in one step per message."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from chatbase.core import ratelimit
from chatbase.core.errors import RateLimited
from chatbase.core.ratelimit import Rate, arate_limits_hit


@pytest.fixture
def counted_trips(monkeypatch):
    """How many trips to a worker thread the limits took."""
    trips = []
    real = ratelimit.sync_to_async

    def counting(function, **kwargs):
        trips.append(function)
        return real(function, **kwargs)

    monkeypatch.setattr(ratelimit, "sync_to_async", counting)
    return trips


async def test_a_process_local_cache_is_counted_on_the_event_loop(settings, counted_trips):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    two = Rate.parse("2/min")
    await arate_limits_hit(("visitor-a", two), ("ip-a", Rate.parse("10/min")))
    await arate_limits_hit(("visitor-a", two), ("ip-a", Rate.parse("10/min")))
    with pytest.raises(RateLimited) as refused:
        await arate_limits_hit(("visitor-a", two), ("ip-a", Rate.parse("10/min")))
    assert 0 < refused.value.retry_after <= 60
    # The refused hit stopped at the visitor's limit: the IP's third was not counted.
    assert cache.get(ratelimit._window("ip-a", Rate.parse("10/min"), time.time())[0]) == 2
    assert counted_trips == []


async def test_a_shared_cache_is_counted_in_one_trip_per_message(settings, tmp_path, counted_trips):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }
    one = Rate.parse("1/min")
    await arate_limits_hit(("visitor-b", one), ("ip-b", one))
    assert len(counted_trips) == 1
    with pytest.raises(RateLimited):
        await arate_limits_hit(("visitor-b", one), ("ip-b", one))
    assert len(counted_trips) == 2
