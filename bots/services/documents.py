"""Documents of a bot and their ingestion: extract -> chunk -> embed -> store.

``document_create`` validates and stores a source and schedules
``document_ingest`` after commit; the API, the admin, ``seed_demo`` and the
``ingest`` command all go through these functions.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import PurePath

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from bots.embeddings import Embedder, get_embedder
from bots.ingestion.chunking import ChunkDraft, chunk_document
from bots.ingestion.extractors import ExtractedDocument, ExtractionFailed, extract
from bots.ingestion.fetch import FetchedPage, fetch_url, validate_url
from bots.ingestion.validation import (
    CONTENT_TYPES,
    HTML,
    MD,
    PDF,
    TXT,
    kind_from_name,
    validate_text,
    validate_upload,
)
from bots.models import Bot, Chunk, Document
from chatbase.core import metrics
from chatbase.core.errors import ChatbaseError, Unavailable, ValidationFailed

logger = logging.getLogger(__name__)

# Errors worth another attempt later: the task retries them with backoff.
TRANSIENT_ERRORS = (Unavailable, OperationalError, InterfaceError)
# Where ingestion keeps its own bookkeeping inside Document.metadata.
INGESTION_KEY = "_ingestion"
_EXTENSION_OF = {PDF: ".pdf", TXT: ".txt", MD: ".md", HTML: ".html"}
# Stuck documents and due re-syncs handled per beat run; the rest wait for the next run.
_BATCH = 200
# Progress: extraction ends at 25 %, chunking at 30 %, embedding fills up to 95 %.
_P_FETCHED, _P_EXTRACTED, _P_CHUNKED, _P_EMBEDDED = 15, 25, 30, 95


class _DocumentGone(Exception):
    """The document was deleted while it was being ingested."""


# --- creation -------------------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = " ".join(line.split()).lstrip("#").strip()
        if line:
            return line if len(line) <= 120 else line[:119].rstrip() + "…"
    return "Untitled text"


def _storage_name(name: str, kind: str) -> str:
    stem = slugify(PurePath(name).stem)[:80] or "document"
    return f"{stem}{_EXTENSION_OF[kind]}"


def _schedule_ingest(document_id: int, *, force: bool) -> None:
    from bots.tasks import document_ingest_task

    # robust: a broker that is down must not turn a saved document into an error
    # response; the recovery task re-enqueues documents left pending.
    transaction.on_commit(partial(document_ingest_task.delay, document_id, force=force), robust=True)


def _delete_file(storage: Storage, name: str) -> None:
    try:
        storage.delete(name)
    except OSError:
        logger.warning("Could not delete the stored file %s", name, exc_info=True)


@transaction.atomic
def document_create(
    *,
    bot: Bot,
    title: str = "",
    upload: UploadedFile | None = None,
    text: str | None = None,
    url: str | None = None,
    metadata: dict | None = None,
    schedule_ingest: bool = True,
) -> Document:
    """Validate and store one source (a file, a text or a URL) and schedule its ingestion.

    Nothing is stored when a rule is broken. ``schedule_ingest=False`` is for callers
    that run :func:`document_ingest` themselves (the ``ingest`` command).
    """
    given = [source for source in (upload, text, url) if source is not None]
    if len(given) != 1:
        raise ValidationFailed("Give exactly one source: a file, a text or a URL.", code="invalid_source")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationFailed("metadata must be an object.")
    title = " ".join((title or "").split())
    if len(title) > Document._meta.get_field("title").max_length:
        raise ValidationFailed("The title is longer than 300 characters.")

    document = Document(bot=bot, metadata=dict(metadata or {}), status=Document.Status.PENDING)
    content = None
    if upload is not None:
        kind = validate_upload(upload).kind
        filename = PurePath(upload.name or "document").name
        document.source_type = Document.SourceType.FILE
        document.original_filename = filename[:300]
        document.content_type = CONTENT_TYPES[kind]
        document.size_bytes = upload.size
        document.title = title or filename[:300]
        upload.seek(0)
        content, storage_name = upload, _storage_name(filename, kind)
    elif text is not None:
        data = validate_text(text)
        document.source_type = Document.SourceType.TEXT
        document.content_type = CONTENT_TYPES[TXT]
        document.size_bytes = len(data)
        document.title = title or _first_line(text)
        content, storage_name = ContentFile(data), _storage_name(document.title, TXT)
    else:
        document.source_type = Document.SourceType.URL
        document.url = validate_url(url)
        document.title = title or document.url[:300]

    stored = None
    try:
        if content is not None:
            document.file.save(storage_name, content, save=False)
            stored = document.file.name
        document.save()
    except BaseException:
        if stored:
            _delete_file(document.file.storage, stored)
        raise
    if schedule_ingest:
        _schedule_ingest(document.pk, force=False)
    return document


# --- ingestion ------------------------------------------------------------------


class _Progress:
    """Writes progress outside any transaction so that API readers see it move."""

    def __init__(self, document: Document, callback: Callable[[int], None] | None):
        self.document = document
        self.callback = callback
        self.last = -1

    def __call__(self, value: float) -> None:
        value = max(0, min(100, int(value)))
        if value == self.last:
            return
        self.last = value
        # updated_at doubles as a heartbeat: recovery only takes documents that stopped moving.
        Document.objects.filter(pk=self.document.pk).update(progress=value, updated_at=timezone.now())
        self.document.progress = value
        if self.callback:
            self.callback(value)


@dataclass
class _Source:
    data: bytes
    kind: str
    charset: str | None = None
    fetched: FetchedPage | None = None


def _kind_of(document: Document) -> str:
    for kind, content_type in CONTENT_TYPES.items():
        if document.content_type == content_type:
            return kind
    return kind_from_name(document.original_filename or document.file.name, document.content_type)


def _load_source(document: Document) -> _Source:
    if document.source_type == Document.SourceType.URL:
        page = fetch_url(document.url)
        return _Source(data=page.body, kind=page.kind, charset=page.charset, fetched=page)
    if not document.file:
        raise ExtractionFailed("The document has no stored file; add it again.", code="file_missing")
    try:
        with document.file.storage.open(document.file.name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ExtractionFailed("The stored file is missing; add the document again.", code="file_missing") from None
    charset = "utf-8" if document.source_type == Document.SourceType.TEXT else None
    return _Source(data=data, kind=_kind_of(document), charset=charset)


def _set_state(document: Document, **fields) -> None:
    fields["updated_at"] = timezone.now()
    Document.objects.filter(pk=document.pk).update(**fields)
    for name, value in fields.items():
        setattr(document, name, value)


def _fail(document: Document, message: str) -> None:
    metrics.ingestion_jobs.labels("error").inc()
    try:
        _set_state(document, status=Document.Status.ERROR, error=message[:2000])
    except DatabaseError:
        logger.exception("Could not record the failure of document %s", document.pk)


def _chunks_intact(document: Document, chunk_count: int, embedder_name: str) -> bool:
    if chunk_count <= 0:
        return False
    matching = Chunk.objects.filter(document_id=document.pk, metadata__embedder=embedder_name).count()
    return matching == chunk_count


def _vectors_for(
    document: Document, drafts: list[ChunkDraft], embedder: Embedder, *, force: bool, progress: _Progress
) -> list:
    """One vector per draft, embedding only texts this bot has no vector for yet."""
    texts: dict[str, str] = {}
    for draft in drafts:
        texts.setdefault(draft.text_hash, draft.text)
    known: dict[str, object] = {}
    if not force:
        rows = (
            Chunk.objects.filter(bot_id=document.bot_id, text_hash__in=list(texts), metadata__embedder=embedder.name)
            .order_by("text_hash")
            .distinct("text_hash")
            .values_list("text_hash", "embedding")
        )
        known.update(rows)
    missing = [(digest, text) for digest, text in texts.items() if digest not in known]
    # Several model batches per call: the model sorts a call's texts by length to pad less,
    # and progress still moves often enough to be seen.
    step = max(1, settings.EMBEDDING_BATCH_SIZE * 4)
    for start in range(0, len(missing), step):
        part = missing[start : start + step]
        vectors = embedder.embed_documents([text for _, text in part])
        known.update(zip([digest for digest, _ in part], vectors, strict=True))
        done = min(start + step, len(missing))
        progress(_P_CHUNKED + (_P_EMBEDDED - _P_CHUNKED) * done / len(missing))
    logger.info(
        "Document %s: %d chunks, %d embedded, %d reused",
        document.pk,
        len(drafts),
        len(missing),
        len(texts) - len(missing),
    )
    return [known[draft.text_hash] for draft in drafts]


def _store_fetched(document: Document, page: FetchedPage) -> str:
    host = page.url.split("//", 1)[-1].split("/", 1)[0]
    name = _storage_name(document.title if document.title != document.url else host, page.kind)
    return document.file.storage.save(
        document.file.field.generate_filename(document, name),
        ContentFile(page.body),
        max_length=document.file.field.max_length,
    )


def _replace_chunks(
    document: Document,
    *,
    drafts: list[ChunkDraft],
    vectors: list,
    content_hash: str,
    extracted: ExtractedDocument,
    source: _Source,
    embedder_name: str,
) -> None:
    """Swap the document's chunks for new ones in one transaction, with every count kept right."""
    new_file = _store_fetched(document, source.fetched) if source.fetched is not None else None
    try:
        with transaction.atomic():
            locked = Document.objects.select_for_update().filter(pk=document.pk).first()
            if locked is None:
                raise _DocumentGone
            _, per_model = Chunk.objects.filter(document_id=locked.pk).delete()
            removed = per_model.get(Chunk._meta.label, 0)
            Chunk.objects.bulk_create(
                [
                    Chunk(
                        bot_id=locked.bot_id,
                        document_id=locked.pk,
                        position=draft.position,
                        text=draft.text,
                        token_count=draft.token_count,
                        text_hash=draft.text_hash,
                        embedding=vector,
                        metadata={**draft.metadata, "embedder": embedder_name},
                    )
                    for draft, vector in zip(drafts, vectors, strict=True)
                ],
                batch_size=500,
            )
            now = timezone.now()
            fields = ["chunk_count", "content_hash", "status", "progress", "error", "metadata", "updated_at"]
            locked.chunk_count = len(drafts)
            locked.content_hash = content_hash
            locked.status = Document.Status.READY
            locked.progress = 100
            locked.error = ""
            locked.metadata = {k: v for k, v in locked.metadata.items() if k != INGESTION_KEY}
            if locked.source_type == Document.SourceType.URL:
                locked.last_synced_at = now
                fields.append("last_synced_at")
                if locked.title == locked.url and extracted.title:
                    locked.title = extracted.title[:300]
                    fields.append("title")
            if new_file is not None:
                old_file = locked.file.name
                locked.file.name = new_file
                locked.content_type = source.fetched.content_type[:100]
                locked.size_bytes = len(source.fetched.body)
                fields += ["file", "content_type", "size_bytes"]
                if old_file and old_file != new_file:
                    transaction.on_commit(partial(_delete_file, locked.file.storage, old_file))
            locked.save(update_fields=fields)
            Bot.objects.filter(pk=locked.bot_id).update(chunk_count=F("chunk_count") + (len(drafts) - removed))
    except BaseException:
        if new_file is not None:
            _delete_file(document.file.storage, new_file)
        raise


def _finish_unchanged(document: Document) -> None:
    metrics.ingestion_jobs.labels("unchanged").inc()
    fields = {"status": Document.Status.READY, "progress": 100, "error": ""}
    if document.source_type == Document.SourceType.URL:
        fields["last_synced_at"] = timezone.now()
    metadata = Document.objects.filter(pk=document.pk).values_list("metadata", flat=True).first() or {}
    if INGESTION_KEY in metadata:
        fields["metadata"] = {k: v for k, v in metadata.items() if k != INGESTION_KEY}
    _set_state(document, **fields)


def document_ingest(
    *, document: Document, force: bool = False, progress_callback: Callable[[int], None] | None = None
) -> Document:
    """Extract, chunk, embed and store a document, synchronously.

    Deliberately not one transaction: progress is written as it goes so that other
    connections see it; only the swap of the chunks at the end is atomic. Unchanged
    text (same SHA-256 as the stored ``content_hash``, chunks in place) embeds
    nothing unless ``force``; chunks whose text this bot already has a vector for
    reuse that vector. A failure leaves status=error with the reason, the progress
    reached and the previous chunks. Transient failures (see TRANSIENT_ERRORS) are
    re-raised after being recorded so that the task can retry them.
    """
    before = Document.objects.filter(pk=document.pk).values("status", "content_hash", "chunk_count").first()
    if before is None:
        return document
    progress = _Progress(document, progress_callback)
    _set_state(document, status=Document.Status.PROCESSING, progress=0, error="")
    progress.last = 0
    try:
        embedder = get_embedder()
        source = _load_source(document)
        progress(_P_FETCHED)
        extracted = extract(source.data, source.kind, charset=source.charset)
        content_hash = hashlib.sha256(extracted.text.encode("utf-8")).hexdigest()
        progress(_P_EXTRACTED)
        # content_hash is written only with a complete set of chunks, so a document
        # scheduled again (pending) with the same text still has nothing to redo.
        unchanged = bool(before["content_hash"]) and before["content_hash"] == content_hash
        if not force and unchanged and _chunks_intact(document, before["chunk_count"], embedder.name):
            _finish_unchanged(document)
            if progress_callback:
                progress_callback(100)
            return document
        drafts = chunk_document(extracted)
        if not drafts:
            raise ExtractionFailed("The document has no text to index.", code="no_text")
        progress(_P_CHUNKED)
        vectors = _vectors_for(document, drafts, embedder, force=force, progress=progress)
        _replace_chunks(
            document,
            drafts=drafts,
            vectors=vectors,
            content_hash=content_hash,
            extracted=extracted,
            source=source,
            embedder_name=embedder.name,
        )
    except _DocumentGone:
        return document
    except SoftTimeLimitExceeded:
        _fail(document, f"Ingestion took longer than {settings.DOCUMENT_INGEST_TIME_LIMIT_SECONDS} s and was stopped.")
        raise
    except TRANSIENT_ERRORS as exc:
        detail = exc.detail if isinstance(exc, ChatbaseError) else "The database was unavailable."
        _fail(document, f"{detail} Ingestion will be retried.")
        raise
    except ChatbaseError as exc:
        _fail(document, exc.detail)
        return document
    except ImproperlyConfigured as exc:
        logger.error("Document %s cannot be ingested: %s", document.pk, exc)
        _fail(document, f"The server is not configured for this: {exc}")
        return document
    except Exception as exc:
        logger.exception("Ingestion of document %s failed", document.pk)
        _fail(document, f"Ingestion failed unexpectedly ({type(exc).__name__}).")
        raise
    metrics.ingestion_jobs.labels("ready").inc()
    if progress_callback:
        progress_callback(100)
    document.refresh_from_db()
    return document


# --- other state changes -------------------------------------------------------------


def document_reingest(*, document: Document, force: bool = True) -> None:
    """Schedule ingestion again (by default re-embedding everything, e.g. after a model change)."""
    with transaction.atomic():
        _set_state(document, status=Document.Status.PENDING, error="")
        _schedule_ingest(document.pk, force=force)


def document_resync(*, document: Document) -> None:
    """Schedule a re-fetch of a web page; an unchanged page re-embeds nothing."""
    if document.source_type != Document.SourceType.URL:
        raise ValidationFailed("Only documents added by URL can be re-synced.", code="not_a_url_document")
    with transaction.atomic():
        # Touching updated_at keeps the beat from picking it again while the task waits.
        _set_state(document)
        _schedule_ingest(document.pk, force=False)


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document, its chunks and (after commit) its stored file."""
    locked = Document.objects.select_for_update().filter(pk=document.pk).first()
    if locked is None:
        return
    _, per_model = Chunk.objects.filter(document_id=locked.pk).delete()
    removed = per_model.get(Chunk._meta.label, 0)
    file_name, storage = locked.file.name, locked.file.storage
    locked.delete()
    if removed:
        Bot.objects.filter(pk=locked.bot_id).update(chunk_count=F("chunk_count") - removed)
    if file_name:
        transaction.on_commit(partial(_delete_file, storage, file_name))


def document_resync_due(*, now: datetime | None = None) -> int:
    """Schedule re-syncs of web pages not synced for URL_RESYNC_INTERVAL_HOURS; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.URL_RESYNC_INTERVAL_HOURS)
    due = list(
        Document.objects.filter(
            source_type=Document.SourceType.URL,
            status__in=[Document.Status.READY, Document.Status.ERROR],
            updated_at__lt=cutoff,
        )
        .filter(Q(last_synced_at__lt=cutoff) | Q(last_synced_at__isnull=True))
        .order_by("last_synced_at", "pk")[:_BATCH]
    )
    for document in due:
        document_resync(document=document)
    return len(due)


@transaction.atomic
def document_recover_stuck(*, now: datetime | None = None) -> int:
    """Re-enqueue documents whose ingestion stopped moving (a killed worker, a lost message).

    A document is stuck when it has been pending or processing with no progress write
    for DOCUMENT_STUCK_AFTER_MINUTES. After DOCUMENT_MAX_RECOVERIES re-enqueues it is
    marked as an error instead, so that a document that kills its worker every time
    does not loop forever. Returns how many documents were handled.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.DOCUMENT_STUCK_AFTER_MINUTES)
    stuck = list(
        Document.objects.select_for_update(skip_locked=True)
        .filter(status__in=[Document.Status.PENDING, Document.Status.PROCESSING], updated_at__lt=cutoff)
        .order_by("updated_at")[:_BATCH]
    )
    for document in stuck:
        metadata = dict(document.metadata)
        info = dict(metadata.get(INGESTION_KEY) or {})
        recoveries = int(info.get("recoveries", 0)) + 1
        if recoveries > settings.DOCUMENT_MAX_RECOVERIES:
            metadata.pop(INGESTION_KEY, None)
            document.status = Document.Status.ERROR
            document.error = (
                f"Ingestion stopped without finishing {recoveries} times (its worker was lost) and was given up. "
                "Re-ingest the document to try again."
            )
            logger.warning("Document %s gave up after %d interrupted ingestions", document.pk, recoveries)
        else:
            logger.info("Document %s was stuck in %s; re-enqueued (%d)", document.pk, document.status, recoveries)
            metadata[INGESTION_KEY] = {**info, "recoveries": recoveries, "recovered_at": now.isoformat()}
            document.status = Document.Status.PENDING
            _schedule_ingest(document.pk, force=False)
        document.metadata = metadata
        document.save(update_fields=["status", "error", "metadata", "updated_at"])
    return len(stuck)
