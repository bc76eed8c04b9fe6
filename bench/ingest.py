"""Ingestion throughput: chunks embedded per second through ``document_ingest`` against the
bare model (``SentenceTransformer.encode``) on the same chunk texts, in the same run.

    python bench/ingest.py [--chunks 300] [--rounds 3]

The real path: a generated text document is stored, extracted, chunked, embedded and its
chunks written to the real database (DJANGO_SETTINGS_MODULE, chatbase.settings.local by
default: the embedded PostgreSQL under var/). The baseline encodes the resulting chunk
texts with the same model, batch size and normalisation and nothing else, right before
and right after each real run (the machine may be shared); the median of the per-round
ratios is reported. The target ratio is >= 0.8.
Everything the benchmark creates (owner, bots, documents, chunks, files) is deleted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.local")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bots.embeddings import LocalEmbedder, get_embedder  # noqa: E402
from bots.ingestion.chunking import chunk_document, count_tokens  # noqa: E402
from bots.ingestion.extractors import extract  # noqa: E402
from bots.models import Bot, Document  # noqa: E402
from bots.services.documents import document_create, document_delete, document_ingest  # noqa: E402
from chatbase.core.models import User  # noqa: E402

_VOCABULARY_TEXT = (
    "account address answer appointment billing booking branch cancel card chennai charge contact customer delivery "
    "discount document email exchange fee form guarantee help hours invoice issue letter manager member office online "
    "order package password payment phone plan policy price product refund register renewal request return schedule "
    "service shipping support team ticket tracking transfer update upgrade warranty website week weekend working"
)
VOCABULARY = _VOCABULARY_TEXT.split()


def generate_text(chunks: int, seed: int = 42) -> str:
    """Paragraphs of plausible support text, about one chunk of CHUNK_TOKENS each."""
    rng = random.Random(seed)
    paragraphs = []
    target = settings.CHUNK_TOKENS
    while len(paragraphs) < chunks:
        sentences = []
        while True:
            sentence = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(8, 22))).capitalize() + "."
            if sentences and count_tokens([" ".join([*sentences, sentence])])[0] > target * 0.9:
                break
            sentences.append(sentence)
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def _bare(model, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200, help="about how many chunks the document makes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    embedder = get_embedder()
    if not isinstance(embedder, LocalEmbedder):
        sys.exit("This benchmark measures the local model: unset EMBEDDINGS.")
    model = embedder.model
    batch_size = embedder.batch_size
    text = generate_text(args.chunks)
    # The chunk texts document_ingest will embed (the same extraction and chunking code).
    texts = [draft.text for draft in chunk_document(extract(text.encode(), "txt"))]
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)

    owner = User.objects.create_user(email=f"bench-{uuid.uuid4().hex[:12]}@chatbase.local")
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            # A new bot per round: vectors are reused within a bot, which would skip the embedding.
            bot = Bot.objects.create(owner=owner, name=f"bench {number}")
            document = document_create(bot=bot, text=text, title="bench", schedule_ingest=False)
            # The machine may be shared: the baseline runs right before and right after the
            # real path, and their mean is what the real path is compared with.
            before = _bare(model, texts, batch_size)
            started = time.perf_counter()
            document = document_ingest(document=document)
            ingest_seconds = time.perf_counter() - started
            after = _bare(model, texts, batch_size)
            if document.status != Document.Status.READY or document.chunk_count != len(texts):
                sys.exit(f"Ingestion did not produce the expected chunks: {document.status} {document.error}")
            bare_seconds = (before + after) / 2
            rounds.append((len(texts) / ingest_seconds, len(texts) / bare_seconds))
            print(
                f"round {number}: document_ingest {rounds[-1][0]:6.1f} chunks/s ({ingest_seconds:5.2f} s)   "
                f"bare encode {rounds[-1][1]:6.1f} chunks/s ({before:5.2f} s, {after:5.2f} s)   "
                f"ratio {rounds[-1][0] / rounds[-1][1]:.2f}"
            )
    finally:
        for document in Document.objects.filter(bot__owner=owner):
            document_delete(document=document)
        owner.delete()

    ratios = sorted(ingest / bare for ingest, bare in rounds)
    print()
    print(f"chunks per document:       {len(texts)} (CHUNK_TOKENS={settings.CHUNK_TOKENS}, batch size {batch_size})")
    print(f"document_ingest (median):  {statistics.median(r[0] for r in rounds):6.1f} chunks/s")
    print(f"bare encode (median):      {statistics.median(r[1] for r in rounds):6.1f} chunks/s")
    print(f"ratio ingest / bare:       {statistics.median(ratios):.2f} median, {ratios[0]:.2f}-{ratios[-1]:.2f} range")
    print("target ratio:              >= 0.80")


if __name__ == "__main__":
    main()
