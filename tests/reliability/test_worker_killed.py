"""A Celery worker is killed (SIGKILL) in the middle of ingesting a document."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from celery import Celery
from django.conf import settings

from bots.models import Bot, Chunk, Document
from bots.services.documents import document_create
from bots.tests.factories import BotFactory
from chatbase.testing import live

pytestmark = pytest.mark.django_db(transaction=True)

PREFIX = "reliability-worker"


def paragraphs(n: int) -> str:
    return "\n\n".join(
        f"Section {i}. The Brightwave panel model {i} carries a {10 + i % 15}-year warranty and delivers "
        f"{300 + i} watts in full sun; installation in district {i % 40} takes {1 + i % 5} days."
        for i in range(n)
    )


def start_worker(redis_url: str, log_name: str, **extra_env: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "chatbase.settings.test",
        "DATABASE_URL": live.test_database_url(),
        "DB_POOL_MAX": "4",
        "REDIS_URL": redis_url,
        "CHATBASE_TEST_REDIS_PREFIX": PREFIX,
        "EMBEDDING_BATCH_SIZE": "2",  # small batches: progress moves, the kill lands mid-way
        **extra_env,
    }
    log = open(os.path.join(settings.VAR_DIR, log_name), "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "chatbase", "worker", "--pool=solo", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_document_whose_worker_died_ends_ready_after_recovery(private_redis):
    # Not the media_root fixture: the workers must read the stored text from the same
    # MEDIA_ROOT as this process, the test settings' default.
    bot = BotFactory()
    document = document_create(bot=bot, title="Catalogue", text=paragraphs(200), schedule_ingest=False)
    # Not the current app: shared tasks in the rest of the run must keep the project's.
    producer = Celery(broker=private_redis.url, set_as_current=False)
    producer.conf.broker_transport_options = {"global_keyprefix": f"{PREFIX}:celery:"}
    producer.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE

    first = start_worker(private_redis.url, "reliability-worker-1.log")
    try:
        producer.send_task("bots.tasks.document_ingest_task", args=[document.pk])
        wait_for(
            lambda: (
                Document.objects.filter(pk=document.pk, status="processing", progress__gt=30).exists()
                or Document.objects.get(pk=document.pk).error
            ),
            timeout=240,
            what="ingestion to be under way",
        )
        first.send_signal(signal.SIGKILL)  # no chance to clean up, like an OOM kill
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()

    document.refresh_from_db()
    assert document.status == Document.Status.PROCESSING, document.error  # stuck: the worker is gone

    # The beat sweeper (documents_recover_stuck_task) finds it and ingests it again on
    # a new worker; "stuck after 0 minutes" stands in for the 30 minutes of the default.
    second = start_worker(private_redis.url, "reliability-worker-2.log", DOCUMENT_STUCK_AFTER_MINUTES="0")
    try:
        producer.send_task("bots.tasks.documents_recover_stuck_task")
        wait_for(
            lambda: Document.objects.filter(pk=document.pk).exclude(status="processing").exists(),
            timeout=240,
            what="the document to leave processing",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        producer.close()

    document.refresh_from_db()
    assert document.status == Document.Status.READY, document.error
    assert document.progress == 100
    chunks = Chunk.objects.filter(document=document)
    positions = list(chunks.values_list("position", flat=True))
    assert len(positions) == len(set(positions)) == document.chunk_count > 0  # no duplicates
    assert not chunks.filter(embedding__isnull=True).exists()
    assert Bot.objects.get(pk=bot.pk).chunk_count == document.chunk_count
