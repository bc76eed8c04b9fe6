"""Celery: eager without a broker, a real worker over Redis with REDIS_URL."""

import queue
import threading

import pytest
from celery import shared_task
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from chatbase.celery import app

# The worker of the real-worker test runs in a thread of this process: the task
# reports here, so no result backend is needed to see that it ran.
RESULTS: "queue.Queue[tuple[str, int]]" = queue.Queue()


@shared_task(name="tests.core.multiply")
def multiply(x, y):
    RESULTS.put((threading.current_thread().name, x * y))
    return x * y


def test_tasks_run_eagerly_without_a_broker():
    if settings.REDIS_URL:
        pytest.skip("eager mode is the no-Redis default")
    assert app.conf.broker_url == "memory://"
    assert multiply.delay(6, 7).get(timeout=1) == 42


@pytest.fixture
def not_eager():
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = saved


@pytest.mark.redis
def test_a_real_worker_runs_a_task_over_redis(not_eager):
    assert app.conf.broker_url == settings.REDIS_URL
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        multiply.apply_async((6, 7), queue=settings.CELERY_TASK_DEFAULT_QUEUE)
        thread, value = RESULTS.get(timeout=20)
    assert value == 42
    # Run by the worker's thread after a trip through Redis, not eagerly in this one.
    assert thread != threading.current_thread().name
