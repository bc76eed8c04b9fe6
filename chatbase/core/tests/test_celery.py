"""Celery: eager without a broker, a real worker over Redis with REDIS_URL."""

import pytest
from celery import shared_task
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from chatbase.celery import app


@shared_task(name="tests.core.multiply")
def multiply(x, y):
    return x * y


def test_tasks_run_eagerly_without_a_broker():
    if settings.REDIS_URL:
        pytest.skip("eager mode is the no-Redis default")
    assert app.conf.broker_url == "memory://"
    assert multiply.delay(6, 7).get(timeout=1) == 42


@pytest.fixture
def real_worker_conf():
    """Turn eager mode off and give results a backend for the duration of one test."""
    saved = {key: app.conf[key] for key in ("task_always_eager", "result_backend")}
    app.conf.update(task_always_eager=False, result_backend=settings.REDIS_URL)
    yield
    app.conf.update(saved)


@pytest.mark.redis
def test_a_real_worker_runs_a_task_over_redis(real_worker_conf):
    assert app.conf.broker_url == settings.REDIS_URL
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result = multiply.apply_async((6, 7), queue=settings.CELERY_TASK_DEFAULT_QUEUE)
        assert result.get(timeout=20) == 42
        # It went through the broker to the worker thread: an eager call has no Redis backend.
        assert result.backend.__class__.__name__ == "RedisBackend"
