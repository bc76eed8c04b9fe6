"""Retrieval over the real pgvector index, with vectors made up for the purpose.

End-to-end search with the real embedding model is in test_search_api.py.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random

import pytest
from django.db import connection, transaction
from django.db.models import F

from bots.models import Bot, Chunk
from bots.selectors import (
    HNSW_SEARCH_SQL,
    _total_chunks_estimate,
    _vector_literal,
    chunk_search_by_vector,
    text_candidates,
    vector_candidates,
)
from bots.tests.factories import BotFactory, DocumentFactory

pytestmark = pytest.mark.django_db

DIMS = 384


def unit(vector):
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def near(base, angle, rng):
    """A unit vector at exactly `angle` radians from `base` (cosine distance 1 - cos(angle))."""
    r = [rng.gauss(0, 1) for _ in base]
    dot = sum(a * b for a, b in zip(r, base, strict=True))
    orthogonal = unit([a - dot * b for a, b in zip(r, base, strict=True)])
    return [math.cos(angle) * b + math.sin(angle) * o for b, o in zip(base, orthogonal, strict=True)]


def add_chunks(bot, vectors, texts=None):
    document = DocumentFactory(bot=bot, status="ready")
    texts = texts or [f"chunk {i} of {bot.name}" for i in range(len(vectors))]
    chunks = Chunk.objects.bulk_create(
        Chunk(
            bot=bot,
            document=document,
            position=i,
            text=text,
            token_count=len(text.split()),
            text_hash=hashlib.sha256(text.encode()).hexdigest(),
            embedding=vector,
        )
        for i, (vector, text) in enumerate(zip(vectors, texts, strict=True))
    )
    Bot.objects.filter(pk=bot.pk).update(chunk_count=F("chunk_count") + len(chunks))
    bot.refresh_from_db()
    return chunks


@pytest.fixture
def rng():
    return random.Random(1234)


@pytest.fixture
def query(rng):
    return unit([rng.gauss(0, 1) for _ in range(DIMS)])


def test_exact_scan_returns_nearest_first_and_only_this_bots_chunks(query, rng):
    mine, other = BotFactory(), BotFactory()
    # The other bot's chunks are all closer to the query than any of mine.
    add_chunks(other, [near(query, 0.01, rng) for _ in range(30)])
    my_chunks = add_chunks(mine, [near(query, 0.05 * (i + 1), rng) for i in range(12)])

    rows = vector_candidates(bot_id=mine.pk, chunk_count=mine.chunk_count, vector=query, limit=5)
    assert [cid for cid, _ in rows] == [c.pk for c in my_chunks[:5]]
    distances = [d for _, d in rows]
    assert distances == sorted(distances)


def _plan_uses_hnsw(bot_id, vector):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ANALYZE bots_chunk")
        cursor.execute("SET LOCAL enable_sort = off")  # as the selector's index path does
        # The selector's own statement: its ORDER BY names the output column.
        cursor.execute(f"EXPLAIN {HNSW_SEARCH_SQL}", [_vector_literal(vector), bot_id, 10])
        return "chunk_embedding_hnsw" in "\n".join(row[0] for row in cursor.fetchall())


def crowded_large_bot(settings, query, rng):
    """A bot searched through the HNSW index, sharing it with a crowd of chunks that are
    all nearer the query: (the bot, its chunks)."""
    settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS = 0
    settings.RETRIEVAL_EXACT_SCAN_SHARE_LIMIT = 0  # half the table would otherwise be scanned exactly
    settings.RETRIEVAL_HNSW_EF_SEARCH = 10
    mine, crowd = BotFactory(), BotFactory()
    add_chunks(crowd, [near(query, 0.1, rng) for _ in range(800)])
    my_chunks = add_chunks(mine, [near(query, 1.2, rng) for _ in range(800)])
    assert _plan_uses_hnsw(mine.pk, query), "the planner did not pick the HNSW index; the test proves nothing"
    return mine, my_chunks


def test_hnsw_path_returns_k_rows_when_the_filter_discards_most(settings, query, rng):
    # A large bot sharing the index with a crowd of chunks that are all nearer the
    # query: the graph walk meets the crowd first. Without iterative scans a
    # post-filtered HNSW search would come back with fewer than k of this bot's rows.
    mine, my_chunks = crowded_large_bot(settings, query, rng)

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL hnsw.ef_search = 10")
        cursor.execute(
            "SELECT id FROM bots_chunk WHERE bot_id = %s ORDER BY embedding <=> %s::vector LIMIT 10",
            [mine.pk, _vector_literal(query)],
        )
        assert len(cursor.fetchall()) < 10  # the post-filter problem is real here

    rows = vector_candidates(bot_id=mine.pk, chunk_count=mine.chunk_count, vector=query, limit=10)
    assert len(rows) == 10
    assert {cid for cid, _ in rows} <= {c.pk for c in my_chunks}


@pytest.mark.parametrize("plan", ["small-bot scan", "GIN index"])
def test_full_text_finds_exact_terms_vectors_miss(plan, settings, query, rng):
    if plan == "GIN index":
        settings.RETRIEVAL_EXACT_SCAN_MAX_CHUNKS = 0
    bot = BotFactory()
    texts = [f"General guidance paragraph number {i} about our services." for i in range(20)]
    texts[13] = "If the installer stops with error E4071, free up disk space and retry."
    # The vectors say nothing about E4071: chunk 13 is the farthest from the query.
    vectors = [near(query, 0.05 + 0.01 * i, rng) for i in range(20)]
    vectors[13] = unit([-x for x in query])
    chunks = add_chunks(bot, vectors, texts)

    text_rows = text_candidates(bot_id=bot.pk, chunk_count=bot.chunk_count, query="what does error E4071?", limit=5)
    assert text_rows[0][0] == chunks[13].pk
    vector_only = chunk_search_by_vector(bot=bot, vector=query, k=3, query="error E4071", mode="vector")
    assert chunks[13].pk not in [r.chunk_id for r in vector_only]
    hybrid = chunk_search_by_vector(bot=bot, vector=query, k=3, query="error E4071", mode="hybrid")
    assert chunks[13].pk in [r.chunk_id for r in hybrid]
    hit = next(r for r in hybrid if r.chunk_id == chunks[13].pk)
    assert hit.text_rank == 1 and hit.vector_rank == 20


def test_hybrid_results_carry_fused_score_and_both_ranks(query, rng):
    bot = BotFactory()
    texts = ["refund policy for annual plans", "shipping times to Europe", "refund window is 30 days"]
    chunks = add_chunks(bot, [near(query, 0.01, rng), near(query, 0.5, rng), near(query, 0.2, rng)], texts)
    results = chunk_search_by_vector(bot=bot, vector=query, k=3, query="refund policy")
    assert results[0].chunk_id == chunks[0].pk
    top = results[0]
    assert top.vector_rank == 1 and top.text_rank == 1
    assert top.score == pytest.approx(2 / 61)
    assert top.document_title
    assert all(r.score >= s.score for r, s in itertools.pairwise(results))


def test_k_rows_always_when_the_bot_has_k_chunks(query, rng):
    bot = BotFactory()
    add_chunks(bot, [unit([rng.gauss(0, 1) for _ in range(DIMS)]) for _ in range(7)])
    assert len(chunk_search_by_vector(bot=bot, vector=query, k=7, query="nothing matches this")) == 7
    assert len(chunk_search_by_vector(bot=bot, vector=query, k=10, query="")) == 7


def test_empty_bot_returns_nothing(query):
    assert chunk_search_by_vector(bot=BotFactory(), vector=query, k=5, query="anything") == []


@pytest.mark.django_db(transaction=True)
def test_the_hnsw_search_is_one_round_trip_whose_settings_end_with_it(settings, query, rng):
    from django.test.utils import CaptureQueriesContext

    mine, _ = crowded_large_bot(settings, query, rng)
    _total_chunks_estimate()  # read now (it is kept a minute), not inside the trips counted below
    with CaptureQueriesContext(connection) as trips:
        rows = vector_candidates(bot_id=mine.pk, chunk_count=mine.chunk_count, vector=query, limit=10)
    assert len(trips) == 1 and "set_config('hnsw.ef_search'" in trips[0]["sql"]
    assert len(rows) == 10  # the settings held: iterative scans found all ten past the crowd
    with transaction.atomic():  # the same search as separate statements in a transaction
        assert vector_candidates(bot_id=mine.pk, chunk_count=mine.chunk_count, vector=query, limit=10) == rows
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_sort'), current_setting('hnsw.ef_search')")
        assert cursor.fetchone() == ("on", "40")  # back to the defaults on this pooled connection
