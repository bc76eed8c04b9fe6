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

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, QuerySet

from bots.models import TEXT_SEARCH_CONFIG, Bot, Chunk, Document, PromptTemplate
from chatbase.core.errors import NotFound
from chatbase.core.models import User

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
    return Bot.objects.select_related("template", "owner").filter(public_key=public_key).first()


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


def vector_candidates(*, bot_id: int, chunk_count: int, vector: Sequence[float], limit: int) -> list[tuple[int, float]]:
    """[(chunk_id, cosine distance)] nearest first; exactly min(limit, chunk_count) rows."""
    literal = _vector_literal(vector)
    if chunk_count <= settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS:
        # "+ 0" makes the ORDER BY expression unusable by the HNSW index, so the
        # planner reads the bot's rows through chunk_bot and sorts them: exact.
        sql = (
            "SELECT id, embedding <=> %s::vector AS distance FROM bots_chunk "
            "WHERE bot_id = %s ORDER BY (embedding <=> %s::vector) + 0 LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [literal, bot_id, literal, limit])
            return cursor.fetchall()
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL: these apply to this transaction only, never leak to the pool.
        # The bot is large: we want the graph walk, not "read all its rows and sort",
        # which the planner's estimates sometimes prefer just above the threshold.
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(settings.RETRIEVAL_HNSW_EF_SEARCH, limit)])
        cursor.execute("SET LOCAL hnsw.max_scan_tuples = %s", [settings.RETRIEVAL_HNSW_MAX_SCAN_TUPLES])
        cursor.execute(
            "SELECT id, embedding <=> %s::vector AS distance FROM bots_chunk "
            "WHERE bot_id = %s ORDER BY embedding <=> %s::vector LIMIT %s",
            [literal, bot_id, literal, limit],
        )
        rows = cursor.fetchall()
    # relaxed_order may return rows slightly out of order.
    return sorted(rows, key=lambda row: row[1])


def text_candidates(*, bot_id: int, chunk_count: int, query: str, limit: int) -> list[tuple[int, float]]:
    """[(chunk_id, ts_rank_cd)] best first, matching any of the query's terms."""
    # plainto_tsquery ANDs every term, so a natural question rarely matches
    # anything; OR-ing the same lexemes lets ts_rank_cd reward chunks with more.
    tsquery = f"NULLIF(replace(plainto_tsquery('{TEXT_SEARCH_CONFIG}', %s)::text, ' & ', ' | '), '')::tsquery"
    if chunk_count <= settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS:
        # A small bot: test its own rows. Left to itself the planner walks the GIN
        # index of every bot's chunks for a common word, 30x slower.
        candidates = "SELECT id, search_vector FROM bots_chunk WHERE bot_id = %s"
        params = [query, bot_id]
    else:
        # A large bot: the GIN index. Ranking is capped at RETRIEVAL_TEXT_MAX_MATCHES
        # rows because a common word can match every chunk, and ranking them all costs
        # more than the whole vector search; the terms this half exists for (names,
        # codes) are rare.
        candidates = (
            "SELECT c.id, c.search_vector FROM bots_chunk c, q "
            "WHERE q.query IS NOT NULL AND c.bot_id = %s AND c.search_vector @@ q.query LIMIT %s"
        )
        params = [query, bot_id, settings.RETRIEVAL_TEXT_MAX_MATCHES]
    sql = f"""
        WITH q AS (SELECT {tsquery} AS query),
        candidates AS MATERIALIZED ({candidates})
        SELECT m.id, ts_rank_cd(m.search_vector, q.query) AS rank
        FROM candidates m, q
        WHERE q.query IS NOT NULL AND m.search_vector @@ q.query
        ORDER BY rank DESC, m.id
        LIMIT %s
    """  # noqa: S608 - only module constants are formatted in; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        return cursor.fetchall()


def _rrf(rankings: list[list[int]], k: int) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return fused


def chunk_search_by_vector(
    *, bot: Bot, vector: Sequence[float], k: int, query: str = "", mode: str = "hybrid"
) -> list[SearchResult]:
    """Top-k chunks of `bot`; `query` is the text for the full-text half of hybrid search."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}")
    pool = max(k, settings.RETRIEVAL_CANDIDATES)
    vector_rows = (
        vector_candidates(bot_id=bot.pk, chunk_count=bot.chunk_count, vector=vector, limit=pool)
        if mode in ("hybrid", "vector")
        else []
    )
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

    chunks = (
        Chunk.objects.filter(pk__in=top)
        .select_related("document")
        .only("id", "text", "metadata", "document_id", "document__title", "document__url")
    )
    by_id = {chunk.pk: chunk for chunk in chunks}
    results = []
    for cid in top:
        chunk = by_id.get(cid)
        if chunk is None:  # deleted between the ranking and this read
            continue
        results.append(
            SearchResult(
                chunk_id=cid,
                document_id=chunk.document_id,
                document_title=chunk.document.title,
                document_url=chunk.document.url,
                text=chunk.text,
                score=scores[cid],
                vector_score=vector_similarity.get(cid),
                vector_rank=vector_rank.get(cid),
                text_rank=text_rank.get(cid),
                metadata=chunk.metadata,
            )
        )
    return results


def chunk_search(*, bot: Bot, query: str, k: int = 5, mode: str = "hybrid") -> list[SearchResult]:
    """Top-k chunks of `bot` for a natural-language query; never another bot's."""
    from bots.embeddings import get_embedder

    vector = get_embedder().embed_query(query) if mode != "text" else []
    return chunk_search_by_vector(bot=bot, vector=vector, k=k, query=query, mode=mode)
