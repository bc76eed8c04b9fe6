"""Offline retrieval evaluation: recall@k and MRR on labelled questions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bots.models import Bot, Document
from bots.selectors import chunk_search
from chatbase.core.errors import ValidationFailed


@dataclass
class Case:
    question: str
    expected: str  # a document's original filename, title or id


@dataclass
class Report:
    mode: str
    k: int
    cases: int
    hits: int
    reciprocal_ranks: float
    misses: list[tuple[str, str, list[str]]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.hits / self.cases if self.cases else 0.0

    @property
    def mrr(self) -> float:
        return self.reciprocal_ranks / self.cases if self.cases else 0.0


def load_cases(path: Path) -> list[Case]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            cases.append(Case(question=str(item["question"]), expected=str(item["expected"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationFailed(f"{path}:{number}: expected {{'question', 'expected'}} JSON ({exc}).") from exc
    if not cases:
        raise ValidationFailed(f"{path}: no cases.")
    return cases


def _documents(bot: Bot) -> tuple[dict[int, set[str]], dict[int, str]]:
    """Each document's accepted names (id, title, filename) and the one to print."""
    keys, labels = {}, {}
    for doc in Document.objects.filter(bot=bot).only("id", "title", "original_filename"):
        keys[doc.pk] = {str(doc.pk), doc.title, doc.original_filename} - {""}
        labels[doc.pk] = doc.original_filename or doc.title or str(doc.pk)
    return keys, labels


def evaluate(*, bot: Bot, cases: list[Case], k: int, mode: str) -> Report:
    keys, labels = _documents(bot)
    known = set().union(*keys.values()) if keys else set()
    unknown = sorted({case.expected for case in cases} - known)
    if unknown:
        raise ValidationFailed(f"No document of this bot is called: {', '.join(unknown)}.")
    report = Report(mode=mode, k=k, cases=len(cases), hits=0, reciprocal_ranks=0.0)
    for case in cases:
        # Rank documents by their best chunk: several chunks of one document count once.
        ranked: list[int] = []
        for result in chunk_search(bot=bot, query=case.question, k=k, mode=mode):
            if result.document_id not in ranked:
                ranked.append(result.document_id)
        rank = next((i for i, doc_id in enumerate(ranked, start=1) if case.expected in keys[doc_id]), None)
        if rank is None:
            got = [labels[doc_id] for doc_id in ranked]
            report.misses.append((case.question, case.expected, got))
        else:
            report.hits += 1
            report.reciprocal_ranks += 1.0 / rank
    return report
