"""Questions embedded by the int8 pass against the fp32 one: what it saves, what it costs.

    .venv/bin/python bench/embedding_precision.py [--rounds 5]

Documents are embedded once, by the real `LocalEmbedder.embed_documents` (fp32, as
ingestion does). Questions go through the real `embed_queries` twice in the same run,
once with EMBEDDING_QUERY_PRECISION=int8 (the default) and once with fp32 (the
baseline), and are ranked against the same document vectors:

* speed: one question per pass, int8 and fp32 alternating round by round (the
  machine may be shared), the median time per question and the ratio;
* the labelled demo set (`bots/demo/eval.jsonl`: 24 questions, each naming the
  document that answers it), vector ranking over the demo documents' chunks:
  recall@3 and MRR by document;
* known items in real prose: paragraphs of the project's documentation and of the
  installed packages' descriptions; the question is a paragraph's first sentence,
  the document the rest of it (the sentence itself is not in it). MRR@10, hit@1,
  how many of fp32's top 10 int8 also ranks in its top 10, and the cosine between
  each question's int8 and fp32 vectors (mean and lowest).

The target: on both sets, quality no more than 0.01 below fp32's (the int8 pass is a
rounding of the model, so some difference either way is expected), and questions at
least twice as fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.local")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.test import override_settings  # noqa: E402

from bots.demo import DOCUMENTS_DIR, EVAL_FILE  # noqa: E402
from bots.embeddings import get_embedder  # noqa: E402
from bots.ingestion.chunking import chunk_document  # noqa: E402
from bots.ingestion.extractors import extract  # noqa: E402

PRECISIONS = ("int8", "fp32")
_SKIP = re.compile(r"^(\||```|#|<|\[|-|\*|>|\d+\.|[A-Z][\w-]*: )")


def known_items() -> list[tuple[str, str]]:
    """(first sentence, rest of the paragraph) from real prose on this machine."""
    sources = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    sources += sorted(Path(sys.prefix).glob("lib/python*/site-packages/*.dist-info/METADATA"))
    pairs, seen = [], set()
    for path in sources:
        for paragraph in re.split(r"\n\s*\n", path.read_text(errors="ignore")):
            if _SKIP.match(paragraph.lstrip()):
                continue
            paragraph = " ".join(paragraph.split())
            match = re.match(r"(.{40,300}?[.!?])\s+(.{150,1500})$", paragraph)
            if match and match.group(2) not in seen:
                seen.add(match.group(2))
                pairs.append((match.group(1), match.group(2)))
    return pairs


def demo_chunks() -> tuple[list[str], list[str]]:
    """(chunk texts, the file each came from) of the demo bot's documents."""
    texts, names = [], []
    for path in sorted(DOCUMENTS_DIR.iterdir()):
        kind = {".md": "md", ".html": "html", ".txt": "txt"}[path.suffix]
        for draft in chunk_document(extract(path.read_bytes(), kind)):
            texts.append(draft.text)
            names.append(path.name)
    return texts, names


def questions(embedder, texts: list[str], precision: str) -> np.ndarray:
    with override_settings(EMBEDDING_QUERY_PRECISION=precision):
        return np.array(embedder.embed_queries(texts))


def speed(embedder, rounds: int, per_round: int = 100) -> dict[str, float]:
    timings: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for precision in PRECISIONS:
        questions(embedder, ["warm up"], precision)
    for round_ in range(rounds):
        for precision in PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]:
            with override_settings(EMBEDDING_QUERY_PRECISION=precision):
                for i in range(per_round):
                    text = f"What does the warranty say about question {round_}-{i} and part {i + 7}?"
                    started = time.perf_counter()
                    embedder.embed_queries([text])
                    timings[precision].append((time.perf_counter() - started) * 1000)
    return {p: statistics.median(t) for p, t in timings.items()}


def labelled(embedder) -> dict[str, tuple[float, float]]:
    texts, names = demo_chunks()
    documents = np.array(embedder.embed_documents(texts))
    cases = [json.loads(line) for line in EVAL_FILE.read_text().splitlines() if line.strip()]
    results = {}
    for precision in PRECISIONS:
        vectors = questions(embedder, [c["question"] for c in cases], precision)
        recalls, reciprocal = [], []
        for case, vector in zip(cases, vectors, strict=True):
            ranked: list[str] = []
            for index in np.argsort(-(documents @ vector)):
                if names[index] not in ranked:
                    ranked.append(names[index])
            rank = ranked.index(case["expected"]) + 1
            recalls.append(rank <= 3)
            reciprocal.append(1 / rank)
        results[precision] = (statistics.mean(recalls), statistics.mean(reciprocal))
    return results


def known_item_quality(
    embedder, pairs: list[tuple[str, str]]
) -> tuple[dict[str, tuple[float, float, float]], np.ndarray]:
    """({precision: (MRR@10, hit@1, top-10 shared with fp32)}, int8-to-fp32 cosine per question)."""
    documents = np.array(embedder.embed_documents([rest for _, rest in pairs]))
    tops, results, vectors = {}, {}, {}
    for precision in PRECISIONS:
        vectors[precision] = questions(embedder, [first for first, _ in pairs], precision)
        scores = vectors[precision] @ documents.T
        order = np.argsort(-scores, axis=1)[:, :10]
        tops[precision] = order
        hits = [np.flatnonzero(row == i) for i, row in enumerate(order)]
        mrr = statistics.mean(1 / (h[0] + 1) if h.size else 0.0 for h in hits)
        hit1 = statistics.mean(bool(h.size and h[0] == 0) for h in hits)
        results[precision] = (mrr, hit1)
    overlap = statistics.mean(
        len(set(a) & set(b)) / 10 for a, b in zip(tops["int8"], tops["fp32"], strict=True)
    )  # fmt: skip
    cosines = (vectors["int8"] * vectors["fp32"]).sum(axis=1)  # both are unit vectors
    return {p: (*results[p], overlap if p == "int8" else 1.0) for p in PRECISIONS}, cosines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    embedder = get_embedder()

    pairs = known_items()
    print(f"known items: {len(pairs)} paragraphs of real prose; labelled: the demo set", flush=True)
    timing = speed(embedder, args.rounds)
    demo = labelled(embedder)
    items, cosines = known_item_quality(embedder, pairs)
    for precision in PRECISIONS:
        recall, mrr = demo[precision]
        item_mrr, hit1, overlap = items[precision]
        print(
            f"{precision:<5} {timing[precision]:6.2f} ms per question | demo recall@3 {recall:.3f} MRR {mrr:.3f}"
            f" | known items MRR@10 {item_mrr:.4f} hit@1 {hit1:.4f} top-10 shared with fp32 {overlap:.3f}"
        )
    print(f"int8 against fp32, the same question: cosine mean {cosines.mean():.4f}, lowest {cosines.min():.4f}")
    print(
        f"\nint8 questions: {timing['fp32'] / timing['int8']:.2f}x as fast (target >= 2x); "
        f"demo MRR {demo['int8'][1] - demo['fp32'][1]:+.4f}, known-item MRR@10 "
        f"{items['int8'][0] - items['fp32'][0]:+.4f} against fp32 (target: no more than 0.01 below); "
        f"cpus={os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
