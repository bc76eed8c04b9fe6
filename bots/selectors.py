"""Reads of the bots app, retrieval included.

Retrieval is hybrid: pgvector cosine similarity and PostgreSQL full-text search
each rank a bot's chunks and reciprocal rank fusion (RRF) merges the two lists.
Vector search alone misses exact terms (names, codes, error messages) that
visitors type; full-text alone misses paraphrases.

pgvector filters *after* walking the HNSW graph, so `WHERE bot_id = X` can leave
fewer than k rows. Two plans avoid that, picked by the bot's chunk count:

* small bots: an exact scan of the bot's rows through the `chunk_bot` index
  (perfect recall; a few thousand distance computations are cheaper than the
  graph walk),
* large bots: the HNSW index with pgvector's iterative scan, which keeps walking
  the graph until k rows pass the filter.

`bench/retrieval.py` measures both and the threshold between them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, QuerySet

from bots.models import TEXT_SEARCH_CONFIG, Bot, Chunk, Document, PromptTemplate
from chatbase.core import metrics
from chatbase.core.db import kept_connection
from chatbase.core.errors import NotFound
from chatbase.core.models import User

logger = logging.getLogger(__name__)

SEARCH_MODES = ("hybrid", "vector", "text")


# --- bots and documents --------------------------------------------------------
def bot_list(*, owner: User) -> QuerySet[Bot]:
    return (
        Bot.objects.filter(owner=owner)
        .select_related("template")
        .annotate(document_count=Count("documents"))
        .order_by("-created_at", "-id")
    )


def bot_get(*, owner: User, bot_id: int) -> Bot:
    """The owner's bot, or NotFound: another owner's bot does not exist for you."""
    bot = bot_list(owner=owner).filter(pk=bot_id).first()
    if bot is None:
        raise NotFound("No such bot.")
    return bot


def bot_get_by_public_key(*, public_key: str) -> Bot | None:
    # Every widget socket's handshake reads this: no joins its readers do not use,
    # and no ORDER BY (the key is unique).
    try:
        return Bot.objects.get(public_key=public_key)
    except Bot.DoesNotExist:
        return None


def document_list(*, bot: Bot) -> QuerySet[Document]:
    return Document.objects.filter(bot=bot).select_related("bot").order_by("-created_at", "-id")


def document_get(*, owner: User, document_id: int) -> Document:
    document = Document.objects.select_related("bot").filter(pk=document_id, bot__owner=owner).first()
    if document is None:
        raise NotFound("No such document.")
    return document


def template_list() -> QuerySet[PromptTemplate]:
    return PromptTemplate.objects.order_by("name")


def template_get(*, slug: str) -> PromptTemplate:
    template = PromptTemplate.objects.filter(slug=slug).first()
    if template is None:
        raise NotFound("No such template.")
    return template


# --- retrieval -----------------------------------------------------------------
@dataclass
class SearchResult:
    chunk_id: int
    document_id: int
    document_title: str
    document_url: str
    text: str
    # The fused (RRF) score in hybrid mode; cosine similarity in vector mode; ts_rank in text mode.
    score: float
    vector_score: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None
    metadata: dict = field(default_factory=dict)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


_table_estimate: tuple[float, int] = (0.0, 0)


def _total_chunks_estimate() -> int:
    """PostgreSQL's own row estimate of the chunk table (from pg_class; refreshed each minute)."""
    global _table_estimate
    fetched_at, rows = _table_estimate
    if time.monotonic() - fetched_at > 60:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'bots_chunk'::regclass")
            rows = max(int(cursor.fetchone()[0]), 0)
        _table_estimate = (time.monotonic(), rows)
    return rows


def exact_scan_is_cheaper(chunk_count: int) -> bool:
    """Exact scans cost ~n row reads; a filtered HNSW walk costs ~1/share of the table.

    bench/retrieval.py measured 0.78 us per row for the exact scan and 4.4 ms for the
    HNSW walk of a bot holding half the table, so the walk costs about 2 ms / share.
    The exact scan wins while n * 0.78 us < 2 ms * N / n, i.e. n * (n / N) < ~2,500.
    """
    if chunk_count <= settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS:
        return True
    total = max(_total_chunks_estimate(), chunk_count)
    return chunk_count * chunk_count / total < settings.RETRIEVAL_EXACT_SCAN_SHARE_LIMIT


# Ordered by the output column: the same expression to the planner (the HNSW index
# serves it), and the 4 kB vector literal is quoted, sent and parsed once, not twice.
HNSW_SEARCH_SQL = (
    "SELECT id, embedding <=> %s::vector AS distance FROM bots_chunk WHERE bot_id = %s ORDER BY distance LIMIT %s"
)


def vector_candidates(*, bot_id: int, chunk_count: int, vector: Sequence[float], limit: int) -> list[tuple[int, float]]:
    """[(chunk_id, cosine distance)] nearest first; exactly min(limit, chunk_count) rows."""
    literal = _vector_literal(vector)
    if exact_scan_is_cheaper(chunk_count):
        # "+ 0" makes the ORDER BY expression unusable by the HNSW index, so the
        # planner reads the bot's rows through chunk_bot and sorts them: exact.
        sql = (
            "SELECT id, embedding <=> %s::vector AS distance FROM bots_chunk "
            "WHERE bot_id = %s ORDER BY (embedding <=> %s::vector) + 0 LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [literal, bot_id, literal, limit])
            return cursor.fetchall()
    # SET LOCAL (set_config(..., true)) for the search only, never leaking to the pool.
    # The bot is large: we want the graph walk, not "read all its rows and sort",
    # which the planner's estimates sometimes prefer just above the threshold.
    settings_sql = (
        "SELECT set_config('enable_sort', 'off', true), set_config('hnsw.iterative_scan', 'relaxed_order', true),"
        " set_config('hnsw.ef_search', %s, true), set_config('hnsw.max_scan_tuples', %s, true)"
    )
    settings_params = [str(max(settings.RETRIEVAL_HNSW_EF_SEARCH, limit)), str(settings.RETRIEVAL_HNSW_MAX_SCAN_TUPLES)]
    search_sql = HNSW_SEARCH_SQL
    search_params = [literal, bot_id, limit]
    with connection.cursor() as cursor:
        if isinstance(cursor.cursor, psycopg.ClientCursor) and connection.get_autocommit():
            # One round trip instead of four (BEGIN, settings, search, COMMIT): the
            # statements of one simple query run as one implicit transaction, so the
            # settings hold for the search after them and end with it.
            cursor.execute(f"{settings_sql}; {search_sql}", [*settings_params, *search_params])
            cursor.cursor.nextset()
            rows = cursor.fetchall()
        else:  # server-side binding (one statement per query), or inside a transaction
            with transaction.atomic():
                cursor.execute(settings_sql, settings_params)
                cursor.execute(search_sql, search_params)
                rows = cursor.fetchall()
    # relaxed_order may return rows slightly out of order.
    return sorted(rows, key=lambda row: row[1])


_common_lexemes_cache: tuple[float, list[str]] = (0.0, [])


def _common_lexemes() -> list[str]:
    """Lexemes in more than RETRIEVAL_TEXT_COMMON_SHARE of all chunks, from ANALYZE's
    statistics of the tsvector column (refreshed every ten minutes)."""
    global _common_lexemes_cache
    fetched_at, common = _common_lexemes_cache
    if time.monotonic() - fetched_at > 600:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
                "WHERE tablename = 'bots_chunk' AND attname = 'search_vector'"
            )
            row = cursor.fetchone()
        share = settings.RETRIEVAL_TEXT_COMMON_SHARE
        common = [elem for elem, freq in zip(row[0], row[1], strict=False) if freq > share] if row and row[0] else []
        _common_lexemes_cache = (time.monotonic(), common)
    return common


def text_candidates(*, bot_id: int, chunk_count: int, query: str, limit: int) -> list[tuple[int, float]]:
    """[(chunk_id, ts_rank_cd)] best first, matching any of the query's informative terms.

    plainto_tsquery ANDs every term, so a natural question rarely matches anything:
    the query's lexemes are OR-ed instead, and ts_rank_cd rewards chunks with more of
    them. Lexemes that occur in a large share of all chunks (an IDF of sorts, from
    PostgreSQL's own statistics) are left out when rarer ones remain: they would
    match most of a bot and bury the rare terms (names, codes) this half is for.
    """
    if chunk_count <= settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS:
        # A small bot: test its own rows. Left to itself the planner walks the GIN
        # index of every bot's chunks for a common word, many times slower.
        candidates = "SELECT id, search_vector FROM bots_chunk WHERE bot_id = %s"
        params = [bot_id]
    else:
        # A large bot: the GIN index, ranking at most RETRIEVAL_TEXT_MAX_MATCHES rows.
        candidates = (
            "SELECT c.id, c.search_vector FROM bots_chunk c, q "
            "WHERE q.query IS NOT NULL AND c.bot_id = %s AND c.search_vector @@ q.query LIMIT %s"
        )
        params = [bot_id, settings.RETRIEVAL_TEXT_MAX_MATCHES]
    sql = f"""
        WITH lexemes AS (SELECT lexeme FROM unnest(to_tsvector('{TEXT_SEARCH_CONFIG}', %s))),
        informative AS (SELECT lexeme FROM lexemes WHERE lexeme <> ALL(%s::text[])),
        chosen AS (
            SELECT lexeme FROM informative
            UNION ALL
            SELECT lexeme FROM lexemes WHERE NOT EXISTS (SELECT 1 FROM informative)
        ),
        q AS (SELECT NULLIF(string_agg(quote_literal(lexeme), ' | '), '')::tsquery AS query FROM chosen),
        candidates AS MATERIALIZED ({candidates})
        SELECT m.id, ts_rank_cd(m.search_vector, q.query) AS rank
        FROM candidates m, q
        WHERE q.query IS NOT NULL AND m.search_vector @@ q.query
        ORDER BY rank DESC, m.id
        LIMIT %s
    """  # noqa: S608 - only module constants are formatted in; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [query, _common_lexemes(), *params, limit])
        return cursor.fetchall()


def _rrf(rankings: list[list[int]], k: int) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return fused


def chunk_search_by_vector(
    *,
    bot: Bot,
    vector: Sequence[float],
    k: int,
    query: str = "",
    mode: str = "hybrid",
    text_rows: list[tuple[int, float]] | None = None,
) -> list[SearchResult]:
    """Top-k chunks of `bot`; `query` is the text for the full-text half of hybrid search
    (whose rows may be given, when they were fetched concurrently)."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}")
    pool = max(k, settings.RETRIEVAL_CANDIDATES)
    vector_rows = (
        vector_candidates(bot_id=bot.pk, chunk_count=bot.chunk_count, vector=vector, limit=pool)
        if mode in ("hybrid", "vector")
        else []
    )
    if text_rows is None:
        text_rows = (
            text_candidates(bot_id=bot.pk, chunk_count=bot.chunk_count, query=query, limit=pool)
            if mode in ("hybrid", "text") and query
            else []
        )

    vector_rank = {cid: rank for rank, (cid, _) in enumerate(vector_rows, start=1)}
    vector_similarity = {cid: 1.0 - distance for cid, distance in vector_rows}
    text_rank = {cid: rank for rank, (cid, _) in enumerate(text_rows, start=1)}
    if mode == "hybrid":
        scores = _rrf([[cid for cid, _ in vector_rows], [cid for cid, _ in text_rows]], settings.RETRIEVAL_RRF_K)
    elif mode == "vector":
        scores = vector_similarity
    else:
        scores = {cid: float(rank) for cid, rank in text_rows}
    top = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]

    # Rows, not model instances: this read is on every answer's way to its first token.
    rows = Chunk.objects.filter(pk__in=top).values_list(
        "id", "text", "metadata", "document_id", "document__title", "document__url"
    )
    by_id = {row[0]: row for row in rows}
    results = []
    for cid in top:
        row = by_id.get(cid)
        if row is None:  # deleted between the ranking and this read
            continue
        _, text, metadata, document_id, document_title, document_url = row
        results.append(
            SearchResult(
                chunk_id=cid,
                document_id=document_id,
                document_title=document_title,
                document_url=document_url,
                text=text,
                score=scores[cid],
                vector_score=vector_similarity.get(cid),
                vector_rank=vector_rank.get(cid),
                text_rank=text_rank.get(cid),
                metadata=metadata,
            )
        )
    return results


# Two each: the full-text half waits on PostgreSQL, and more Python threads would only
# contend with the event loop for the GIL (see chatbase.core.db).
_retrieval_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="retrieval")
# Searches started ahead of their reader, or awaited by async code, run here: each waits
# on the pool above (its full-text half), so sharing that pool could leave it full of
# waiters. Four: they mostly wait (the query batcher, PostgreSQL), and fewer would cap
# how many questions reach the batcher together.
_search_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="retrieval-search")
PREFETCH_KEEP_SECONDS = 30
PREFETCH_MAX_PENDING = 256


# The retrieval threads keep their connections (chatbase.core.db.kept_connection):
# a checkout per search cost a round trip on the way to the first token.
_text_candidates_in_thread = kept_connection(text_candidates)


class _Prefetches:
    """Searches started before anyone asked for them, each taken once by its reader.

    The chat socket starts the search for a message the moment the frame arrives,
    so that retrieval (embedding the question, both rankings) runs while the message
    is stored and the conversation loaded instead of after them. One never taken (the
    message was refused, the conversation moved on) is dropped after a while.
    """

    def __init__(self):
        self._items: OrderedDict[tuple, tuple[float, Future]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, key: tuple, search) -> None:
        now = time.monotonic()
        with self._lock:
            while self._items and (
                len(self._items) >= PREFETCH_MAX_PENDING
                or now - next(iter(self._items.values()))[0] > PREFETCH_KEEP_SECONDS
            ):
                self._items.popitem(last=False)
            if key not in self._items:
                self._items[key] = (now, _search_threads.submit(search))

    def take(self, key: tuple) -> Future | None:
        with self._lock:
            item = self._items.pop(key, None)
        if item is None or time.monotonic() - item[0] > PREFETCH_KEEP_SECONDS:
            return None
        return item[1]


_prefetches = _Prefetches()


def _prefetch_key(bot: Bot, query: str, k: int) -> tuple:
    # The chunk count picks the plan; a bot that changed since is searched afresh.
    return (bot.pk, bot.chunk_count, query, k)


def _hybrid_search_in_thread(bot: Bot, query: str, k: int):
    @kept_connection
    def search() -> list[SearchResult]:
        return _chunk_search(bot=bot, query=query, k=k, mode="hybrid")

    return search


def chunk_search_prefetch(*, bot: Bot, query: str, k: int) -> None:
    """Start the hybrid search `chunk_search(bot=bot, query=query, k=k)` will need."""
    if not query or not bot.chunk_count:
        return
    _prefetches.start(_prefetch_key(bot, query, k), _hybrid_search_in_thread(bot, query, k))


async def chunk_search_async(*, bot: Bot, query: str, k: int) -> list[SearchResult]:
    """The hybrid `chunk_search` for async code: the prefetched search if one was started,
    else one on the search threads; the caller's thread waits for neither."""
    prefetched = _prefetches.take(_prefetch_key(bot, query, k))
    if prefetched is not None:
        try:
            return await asyncio.wrap_future(prefetched)
        except Exception:  # a hiccup of the early search: searched again below, which reports
            logger.debug("prefetched search failed; searching again", exc_info=True)
    return await asyncio.wrap_future(_search_threads.submit(_hybrid_search_in_thread(bot, query, k)))


def chunk_search(*, bot: Bot, query: str, k: int = 5, mode: str = "hybrid") -> list[SearchResult]:
    """Top-k chunks of `bot` for a natural-language query; never another bot's.

    In hybrid mode the full-text half runs on another connection while the question
    is embedded and the vector half runs: they take about as long as each other, and
    this is on every answer's path to its first token. Inside a transaction (which
    the other connection could not see into) both run here, one after the other.
    A search started ahead by chunk_search_prefetch is waited for instead of repeated.
    """
    if mode == "hybrid" and not connection.in_atomic_block:
        prefetched = _prefetches.take(_prefetch_key(bot, query, k))
        # A failed early search (a database hiccup) is simply run again, here.
        if prefetched is not None and prefetched.exception() is None:
            return prefetched.result()
    return _chunk_search(bot=bot, query=query, k=k, mode=mode)


def _chunk_search(*, bot: Bot, query: str, k: int, mode: str) -> list[SearchResult]:
    from bots.embeddings import get_embedder

    started = time.perf_counter()
    text_future = None
    if mode == "hybrid" and query and not connection.in_atomic_block:
        text_future = _retrieval_threads.submit(
            _text_candidates_in_thread,
            bot_id=bot.pk,
            chunk_count=bot.chunk_count,
            query=query,
            limit=max(k, settings.RETRIEVAL_CANDIDATES),
        )
    vector = get_embedder().embed_query(query) if mode != "text" else []
    results = chunk_search_by_vector(
        bot=bot, vector=vector, k=k, query=query, mode=mode, text_rows=text_future.result() if text_future else None
    )
    metrics.retrieval_latency.labels(mode).observe(time.perf_counter() - started)
    return results
