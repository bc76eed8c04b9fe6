"""Document services over the real database and the real embedding model."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from bots.models import Bot, Chunk, Document
from bots.services.documents import (
    INGESTION_KEY,
    document_create,
    document_delete,
    document_ingest,
    document_recover_stuck,
    document_reingest,
    document_resync,
    document_resync_due,
)
from bots.tasks import document_ingest_task
from bots.tests.conftest import Response, stored_files
from bots.tests.factories import BotFactory
from bots.tests.pdfs import make_bomb_pdf, make_many_pages_pdf, make_pdf
from bots.tests.test_embeddings import _embeddings_route
from chatbase.core.errors import Unavailable

pytestmark = pytest.mark.django_db

PARAGRAPHS = [
    "Refunds are paid within fourteen days of receiving the returned item in its original packaging.",
    "Our Chennai office opens at nine in the morning and closes at six in the evening on weekdays.",
    "Shipping inside India takes two to four working days; international orders take up to two weeks.",
    "Every plan includes email support; the business plan adds a phone line and a named account manager.",
    "Passwords can be reset from the sign-in page with the link that is sent to the registered address.",
    "Invoices are issued on the first day of each month and can be downloaded from the billing page.",
]


@pytest.fixture(autouse=True)
def small_chunks(settings, media_root):
    # One paragraph per chunk: small documents still have several chunks.
    settings.CHUNK_TOKENS = 30
    settings.CHUNK_OVERLAP_TOKENS = 0


@pytest.fixture
def bot():
    return BotFactory()


def _text(paragraphs=PARAGRAPHS) -> str:
    return "\n\n".join(paragraphs)


def _ingested(bot, text: str, **kwargs) -> Document:
    document = document_create(bot=bot, text=text, schedule_ingest=False, **kwargs)
    return document_ingest(document=document)


def _overwrite(document: Document, text: str) -> None:
    with open(document.file.path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _chunk_ids(document) -> list[int]:
    return list(Chunk.objects.filter(document=document).order_by("position").values_list("pk", flat=True))


# --- the pipeline ------------------------------------------------------------------


def test_create_schedules_ingestion_after_commit_and_it_runs_to_ready(
    bot, local_embedder, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        document = document_create(bot=bot, text=_text())
        assert Document.objects.get(pk=document.pk).status == Document.Status.PENDING
    assert len(callbacks) == 1
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assert document.progress == 100
    assert document.error == ""
    assert document.chunk_count == len(PARAGRAPHS)
    assert document.content_hash == hashlib.sha256(_text().encode()).hexdigest()
    chunks = list(Chunk.objects.filter(document=document).order_by("position"))
    assert [c.text for c in chunks] == PARAGRAPHS
    for chunk in chunks:
        assert chunk.bot_id == bot.pk
        assert len(chunk.embedding) == 384
        assert chunk.token_count > 0
        assert chunk.text_hash == hashlib.sha256(chunk.text.encode()).hexdigest()
        assert chunk.metadata["embedder"] == local_embedder.name
    bot.refresh_from_db()
    assert bot.chunk_count == len(PARAGRAPHS)


def test_stored_vectors_are_the_models_vectors(bot, local_embedder):
    document = _ingested(bot, _text())
    chunk = Chunk.objects.filter(document=document).order_by("position").first()
    expected = local_embedder.embed_documents([chunk.text])[0]
    assert list(chunk.embedding) == pytest.approx(expected, abs=1e-6)


def test_unchanged_content_is_not_re_embedded(bot, embed_spy):
    document = _ingested(bot, _text())
    before = _chunk_ids(document)
    embed_spy.calls.clear()

    document = document_ingest(document=document)
    assert embed_spy.calls == []
    assert _chunk_ids(document) == before  # not even rewritten
    assert document.status == Document.Status.READY
    assert document.progress == 100
    bot.refresh_from_db()
    assert bot.chunk_count == len(PARAGRAPHS)


def test_force_re_embeds_everything(bot, embed_spy):
    document = _ingested(bot, _text())
    before = _chunk_ids(document)
    embed_spy.calls.clear()
    document_ingest(document=document, force=True)
    assert sorted(embed_spy.texts) == sorted(PARAGRAPHS)
    assert set(_chunk_ids(document)).isdisjoint(before)
    bot.refresh_from_db()
    assert bot.chunk_count == len(PARAGRAPHS)


def test_changed_content_replaces_the_chunks_and_reuses_unchanged_vectors(bot, embed_spy):
    document = _ingested(bot, _text())
    old_ids = _chunk_ids(document)
    old_hash = document.content_hash
    embed_spy.calls.clear()

    changed = [*PARAGRAPHS[:2], "Gift cards never expire and can be combined with any discount code."]
    _overwrite(document, _text(changed))
    document = document_ingest(document=document)

    assert embed_spy.texts == [changed[2]]  # the two unchanged paragraphs kept their vectors
    assert document.status == Document.Status.READY
    assert document.content_hash != old_hash
    assert document.chunk_count == 3
    assert [c.text for c in Chunk.objects.filter(document=document).order_by("position")] == changed
    assert set(_chunk_ids(document)).isdisjoint(old_ids)
    bot.refresh_from_db()
    assert bot.chunk_count == 3


def test_a_failure_while_storing_keeps_the_old_chunks(bot, embed_spy):
    document = _ingested(bot, _text())
    old_ids = _chunk_ids(document)
    old_hash = document.content_hash
    # A real database error in the middle of the swap (after the old chunks were deleted).
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
            BEGIN
                IF NEW.text LIKE '%POISON%' THEN RAISE EXCEPTION 'poisoned chunk'; END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON bots_chunk
                FOR EACH ROW EXECUTE FUNCTION refuse_poison();
            """
        )
    _overwrite(document, _text([*PARAGRAPHS[:3], "This paragraph is POISON for the database."]))

    with pytest.raises(Exception, match="poisoned chunk"):
        document_ingest(document=document)

    document.refresh_from_db()
    assert document.status == Document.Status.ERROR
    assert "unexpectedly" in document.error
    assert document.progress == 95  # kept where it stopped
    assert document.content_hash == old_hash
    assert document.chunk_count == len(PARAGRAPHS)
    assert _chunk_ids(document) == old_ids
    bot.refresh_from_db()
    assert bot.chunk_count == len(PARAGRAPHS)


def test_vectors_are_reused_across_documents_of_the_same_bot_only(bot, embed_spy):
    _ingested(bot, _text(PARAGRAPHS[:3]))
    embed_spy.calls.clear()
    _ingested(bot, _text(PARAGRAPHS[1:5]))
    assert embed_spy.texts == PARAGRAPHS[3:5]

    embed_spy.calls.clear()
    other = BotFactory()
    _ingested(other, _text(PARAGRAPHS[1:5]))
    assert sorted(embed_spy.texts) == sorted(PARAGRAPHS[1:5])  # another bot's chunks are not shared
    bot.refresh_from_db()
    other.refresh_from_db()
    assert (bot.chunk_count, other.chunk_count) == (7, 4)


def test_repeated_paragraphs_are_embedded_once(bot, embed_spy):
    document = _ingested(bot, _text([PARAGRAPHS[0], PARAGRAPHS[1], PARAGRAPHS[0]]))
    assert document.chunk_count == 3
    assert sorted(embed_spy.texts) == sorted(PARAGRAPHS[:2])


def test_pdf_chunks_store_page_numbers(bot, local_embedder):
    pdf = make_pdf([PARAGRAPHS[0], PARAGRAPHS[1], [PARAGRAPHS[2], PARAGRAPHS[3]]])
    document = document_create(bot=bot, upload=SimpleUploadedFile("guide.pdf", pdf), schedule_ingest=False)
    document = document_ingest(document=document)
    assert document.status == Document.Status.READY
    pages = {c.text.splitlines()[0]: (c.metadata["page_start"], c.metadata["page_end"]) for c in document.chunks.all()}
    assert pages[PARAGRAPHS[0]] == (1, 1)
    assert pages[PARAGRAPHS[1]] == (2, 2)
    assert pages[PARAGRAPHS[3]] == (3, 3)


def test_markdown_chunks_store_heading_paths(bot, local_embedder):
    text = f"# Help\n\n## Refunds\n\n{PARAGRAPHS[0]}\n\n## Opening hours\n\n{PARAGRAPHS[1]}\n"
    upload = SimpleUploadedFile("help.md", text.encode(), content_type="text/markdown")
    document = document_ingest(document=document_create(bot=bot, upload=upload, schedule_ingest=False))
    headings = [c.metadata["headings"] for c in document.chunks.order_by("position")]
    assert headings == [["Help", "Refunds"], ["Help", "Opening hours"]]


def test_a_pdf_bomb_ends_in_error_and_the_process_keeps_serving(
    bot, local_embedder, settings, django_capture_on_commit_callbacks
):
    settings.PDF_PARSE_MEMORY_MB = 80
    upload = SimpleUploadedFile("bomb.pdf", make_bomb_pdf(60), content_type="application/pdf")
    with django_capture_on_commit_callbacks(execute=True):
        bomb = document_create(bot=bot, upload=upload)
    bomb.refresh_from_db()
    assert bomb.status == Document.Status.ERROR
    assert "too much memory" in bomb.error
    assert bomb.chunks.count() == 0

    settings.PDF_PARSE_CPU_SECONDS = 1
    slow = document_create(
        bot=bot, upload=SimpleUploadedFile("slow.pdf", make_many_pages_pdf(3000)), schedule_ingest=False
    )
    slow = document_ingest(document=slow)
    assert slow.status == Document.Status.ERROR
    assert "CPU" in slow.error

    # Same process, right after: ingestion still works.
    healthy = _ingested(bot, _text())
    assert healthy.status == Document.Status.READY
    assert healthy.chunk_count == len(PARAGRAPHS)


def test_a_failed_re_ingestion_keeps_the_previous_chunks(bot, local_embedder):
    document = _ingested(bot, _text())
    ids = _chunk_ids(document)
    document.file.storage.delete(document.file.name)
    document = document_ingest(document=document)
    assert document.status == Document.Status.ERROR
    assert "missing" in document.error
    assert _chunk_ids(document) == ids
    bot.refresh_from_db()
    assert bot.chunk_count == len(PARAGRAPHS)


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_to_other_connections_while_ingesting(local_embedder, monkeypatch, settings):
    settings.EMBEDDING_BATCH_SIZE = 1  # embedding in steps of 4 chunks: several progress writes
    bot = BotFactory()
    document = document_create(bot=bot, text=_text(PARAGRAPHS * 2 + ["One more line of text."]), schedule_ingest=False)
    seen = []

    def look_from_another_connection():
        try:
            seen.append(Document.objects.values_list("status", "progress").get(pk=document.pk))
        finally:
            connections.close_all()

    real = type(local_embedder).embed_documents

    def embed_and_look(texts):
        thread = threading.Thread(target=look_from_another_connection)
        thread.start()
        thread.join()
        return real(local_embedder, texts)

    monkeypatch.setattr(local_embedder, "embed_documents", embed_and_look)
    reported = []
    document = document_ingest(document=document, progress_callback=reported.append)

    assert document.status == Document.Status.READY
    assert len(seen) >= 2
    assert all(status == Document.Status.PROCESSING for status, _ in seen)
    progress_seen = [p for _, p in seen]
    assert progress_seen == sorted(progress_seen)
    assert 0 < progress_seen[0] < progress_seen[-1] < 100
    assert reported == sorted(reported)
    assert reported[-1] == 100
    assert Document.objects.get(pk=document.pk).progress == 100


# --- web pages ---------------------------------------------------------------------


def _page(title, paragraphs):
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>".encode()


def test_a_url_document_is_fetched_and_re_synced_only_when_changed(
    bot, embed_spy, local_server, django_capture_on_commit_callbacks
):
    pages = {"/faq": _page("FAQ", PARAGRAPHS[:3])}
    server = local_server({"/faq": lambda request: Response(200, pages["/faq"], {"Content-Type": "text/html"})})

    with django_capture_on_commit_callbacks(execute=True):
        document = document_create(bot=bot, url=server.url("/faq"))
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assert document.title == "FAQ"  # from the page, since none was given
    assert document.content_type == "text/html"
    assert document.file.read() == pages["/faq"]
    first_sync = document.last_synced_at
    assert first_sync is not None
    ids = _chunk_ids(document)
    assert document.chunks.first().metadata["headings"] == ["FAQ"]

    # Unchanged page: nothing re-embedded, chunks untouched, sync time moves on.
    embed_spy.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        document_resync(document=document)
    document.refresh_from_db()
    assert embed_spy.calls == []
    assert _chunk_ids(document) == ids
    assert document.last_synced_at > first_sync
    assert len(server.requests) == 2

    # Changed page: only the new paragraph is embedded; the stored body is replaced.
    old_file = document.file.name
    pages["/faq"] = _page("FAQ", [*PARAGRAPHS[:3], PARAGRAPHS[4]])
    with django_capture_on_commit_callbacks(execute=True):
        document_resync(document=document)
    document.refresh_from_db()
    assert embed_spy.texts == [PARAGRAPHS[4]]
    assert document.chunk_count == 4
    assert document.file.read() == pages["/faq"]
    assert not document.file.storage.exists(old_file)


def test_a_fetch_error_during_ingestion_ends_in_error_with_the_message(
    bot, local_embedder, local_server, django_capture_on_commit_callbacks
):
    state = {"status": 200}
    server = local_server(
        {"/doc": lambda request: Response(state["status"], _page("Doc", PARAGRAPHS[:2]), {"Content-Type": "text/html"})}
    )
    document = _ingested_url(bot, server.url("/doc"), django_capture_on_commit_callbacks)
    ids = _chunk_ids(document)

    state["status"] = 500
    with django_capture_on_commit_callbacks(execute=True):
        document_resync(document=document)
    document.refresh_from_db()
    assert document.status == Document.Status.ERROR
    assert "HTTP 500" in document.error
    assert _chunk_ids(document) == ids  # still searchable


def _ingested_url(bot, url, capture) -> Document:
    with capture(execute=True):
        document = document_create(bot=bot, url=url)
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    return document


def test_only_url_documents_can_be_re_synced(bot):
    document = document_create(bot=bot, text="hello", schedule_ingest=False)
    with pytest.raises(Exception, match="Only documents added by URL"):
        document_resync(document=document)


def test_due_url_documents_are_re_synced(
    bot, local_embedder, local_server, django_capture_on_commit_callbacks, settings
):
    settings.URL_RESYNC_INTERVAL_HOURS = 24
    server = local_server(
        {"/p": lambda request: Response(200, _page("P", PARAGRAPHS[:1]), {"Content-Type": "text/html"})}
    )
    due = _ingested_url(bot, server.url("/p"), django_capture_on_commit_callbacks)
    fresh = _ingested_url(bot, server.url("/p") + "?fresh", django_capture_on_commit_callbacks)
    text = _ingested(bot, "not a web page")
    long_ago = timezone.now() - timedelta(hours=25)
    Document.objects.filter(pk__in=[due.pk, text.pk]).update(last_synced_at=long_ago, updated_at=long_ago)
    requests_before = len(server.requests)

    with django_capture_on_commit_callbacks(execute=True):
        assert document_resync_due() == 1
    due.refresh_from_db()
    fresh.refresh_from_db()
    assert due.last_synced_at > long_ago
    assert len(server.requests) == requests_before + 1
    with django_capture_on_commit_callbacks(execute=True):
        assert document_resync_due() == 0  # just synced


# --- delete, reingest, recovery ---------------------------------------------------


def test_delete_removes_chunks_the_file_after_commit_and_fixes_the_count(
    bot, local_embedder, media_root, django_capture_on_commit_callbacks
):
    keep = _ingested(bot, _text(PARAGRAPHS[:2]))
    gone = _ingested(bot, _text(PARAGRAPHS[2:5]))
    bot.refresh_from_db()
    assert bot.chunk_count == 5
    path = gone.file.path

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        document_delete(document=gone)
        assert Chunk.objects.filter(document_id=gone.pk).count() == 0
        assert Document.objects.filter(pk=gone.pk).count() == 0
        assert stored_files(media_root).count(type(media_root)(path)) == 1  # not before commit
    for callback in callbacks:
        callback()
    assert [str(p) for p in stored_files(media_root)] == [keep.file.path]
    bot.refresh_from_db()
    assert bot.chunk_count == 2
    assert Chunk.objects.filter(bot=bot).count() == 2
    document_delete(document=gone)  # already gone: nothing to do


def test_reingest_schedules_a_forced_run(bot, embed_spy, django_capture_on_commit_callbacks):
    document = _ingested(bot, _text(PARAGRAPHS[:2]))
    embed_spy.calls.clear()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        document_reingest(document=document)
    assert Document.objects.get(pk=document.pk).status == Document.Status.PENDING
    assert len(callbacks) == 1
    callbacks[0]()
    assert sorted(embed_spy.texts) == sorted(PARAGRAPHS[:2])
    assert Document.objects.get(pk=document.pk).status == Document.Status.READY


def test_stuck_documents_are_re_enqueued_then_given_up(
    bot, local_embedder, settings, django_capture_on_commit_callbacks
):
    settings.DOCUMENT_STUCK_AFTER_MINUTES = 30
    settings.DOCUMENT_MAX_RECOVERIES = 2
    stuck = document_create(bot=bot, text=_text(PARAGRAPHS[:2]), schedule_ingest=False)
    busy = document_create(bot=bot, text=_text(PARAGRAPHS[2:3]), schedule_ingest=False)
    long_ago = timezone.now() - timedelta(minutes=31)
    # A worker died mid-way: processing, and no progress write for over 30 minutes.
    Document.objects.filter(pk=stuck.pk).update(status=Document.Status.PROCESSING, progress=40, updated_at=long_ago)
    Document.objects.filter(pk=busy.pk).update(status=Document.Status.PROCESSING, progress=40)

    for attempt in (1, 2):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert document_recover_stuck() == 1
        stuck.refresh_from_db()
        assert stuck.status == Document.Status.PENDING
        assert stuck.metadata[INGESTION_KEY]["recoveries"] == attempt
        assert len(callbacks) == 1
        # The re-enqueued task is lost too: the document stays pending.
        Document.objects.filter(pk=stuck.pk).update(updated_at=long_ago)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert document_recover_stuck() == 1
    stuck.refresh_from_db()
    assert callbacks == []
    assert stuck.status == Document.Status.ERROR
    assert "given up" in stuck.error
    busy.refresh_from_db()
    assert busy.status == Document.Status.PROCESSING  # still moving: left alone


def test_a_recovered_document_is_ingested_and_its_count_cleared(
    bot, local_embedder, django_capture_on_commit_callbacks
):
    stuck = document_create(bot=bot, text=_text(PARAGRAPHS[:2]), metadata={"source": "crm"}, schedule_ingest=False)
    Document.objects.filter(pk=stuck.pk).update(
        status=Document.Status.PROCESSING, updated_at=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert document_recover_stuck() == 1
    stuck.refresh_from_db()
    assert stuck.status == Document.Status.READY
    assert stuck.metadata == {"source": "crm"}


# --- the task ---------------------------------------------------------------------


def test_the_task_returns_quietly_when_the_document_is_gone():
    assert document_ingest_task.delay(987654321).get() is None


def test_the_task_declares_its_delivery_guarantees_and_limits(settings):
    assert document_ingest_task.acks_late is True
    assert document_ingest_task.reject_on_worker_lost is True
    assert document_ingest_task.time_limit == settings.DOCUMENT_INGEST_TIME_LIMIT_SECONDS
    assert 0 < document_ingest_task.soft_time_limit < document_ingest_task.time_limit
    assert document_ingest_task.max_retries == settings.DOCUMENT_INGEST_MAX_RETRIES


@pytest.fixture
def eager_retries():
    """Eager tasks retry in-process only when their errors do not propagate (as on a worker)."""
    from chatbase.celery import app

    saved = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = saved


def test_the_task_retries_a_transient_embedding_outage(bot, local_server, eager_retries):
    server = local_server({"/v1/embeddings": _embeddings_route([503, 503, 503])})
    with override_settings(
        EMBEDDINGS="openai",
        EMBEDDINGS_OPENAI_API_KEY="sk-test",
        EMBEDDINGS_OPENAI_BASE_URL=server.url("/v1"),
        EMBEDDING_MAX_ATTEMPTS=1,
    ):
        document = document_create(bot=bot, text=_text(PARAGRAPHS[:2]), schedule_ingest=False)
        document_ingest_task.delay(document.pk)  # eager here; backoff waits are skipped
    document.refresh_from_db()
    assert document.status == Document.Status.READY
    assert len(server.requests) == 4  # three failures, each retried by the task, then success
    assert document.chunks.first().metadata["embedder"] == "openai:text-embedding-3-small"


def test_a_persistent_outage_ends_in_error_after_the_task_retries(bot, local_server, eager_retries):
    server = local_server({"/v1/embeddings": _embeddings_route([503] * 50)})
    with override_settings(
        EMBEDDINGS="openai",
        EMBEDDINGS_OPENAI_API_KEY="sk-test",
        EMBEDDINGS_OPENAI_BASE_URL=server.url("/v1"),
        EMBEDDING_MAX_ATTEMPTS=1,
    ):
        document = document_create(bot=bot, text=_text(PARAGRAPHS[:2]), schedule_ingest=False)
        result = document_ingest_task.delay(document.pk)
    assert result.state == "FAILURE"
    assert isinstance(result.result, Unavailable)
    document.refresh_from_db()
    assert document.status == Document.Status.ERROR
    assert "unavailable" in document.error
    assert len(server.requests) == 1 + document_ingest_task.max_retries


def test_unconfigured_openai_embeddings_end_in_a_clear_error(bot):
    with override_settings(EMBEDDINGS="openai", EMBEDDINGS_OPENAI_API_KEY=""):
        document = document_ingest(document=document_create(bot=bot, text="hello", schedule_ingest=False))
    assert document.status == Document.Status.ERROR
    assert "OPENAI_API_KEY" in document.error


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_ingestion_runs_on_a_real_worker_over_redis(local_embedder, settings):
    from celery.contrib.testing.worker import start_worker

    from chatbase.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        bot = BotFactory()
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            document = document_create(bot=bot, text=_text(PARAGRAPHS[:3]))  # autocommit: enqueued at once
            for _ in range(200):
                document.refresh_from_db()
                if document.status in (Document.Status.READY, Document.Status.ERROR):
                    break
                threading.Event().wait(0.1)
    finally:
        app.conf.task_always_eager = saved
    assert document.status == Document.Status.READY, document.error
    assert Bot.objects.get(pk=bot.pk).chunk_count == 3
    assert json.loads(json.dumps(document.metadata)) == {}
