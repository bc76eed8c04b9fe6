"""The offline answerer: quotes the passages' sentences that best match the question.

No model and no network, so it is always available: the default with no API key and
the last resort when every model fails. It says plainly that it is quoting, cites
each quote with the passage's number ([1] is the request's first passage, as in the
models' prompt), and says so when nothing in the passages matches.

Scoring is lexical: the question and each sentence are reduced to content-word stems
(stopwords dropped, a light English stemmer), sentences are ranked by BM25 over the
sentences of all passages, weighted by how much of the question they cover, with a
bonus for question phrases (consecutive content words) found in the same order.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from bots.llm.prompting import last_user_text
from bots.llm.providers.base import ModelCall, Provider, ProviderEvent, TurnEnd
from bots.llm.types import Passage, TextDelta, Usage

INTRO = "Here is what the documents say:"
NOT_FOUND = "I could not find that in the documents."
CONTINUATION_INTRO = "Here is what the documents say about it:"
CONTINUATION_NOT_FOUND = "(The answer was interrupted, and I could not find more about it in the documents.)"

MODEL_NAME = "extractive"
# Share of the question's weight a sentence must match to count as relevant.
MIN_COVERAGE = 0.34
UNSEEN_TERM_WEIGHT = 0.5
# Sentences far weaker than the best one are left out rather than padding the answer,
# unless they answer a part of the question that the others leave out.
MIN_RELATIVE_SCORE = 0.35
MIN_NEW_COVERAGE = 0.15
MIN_WORDS = 3
MAX_QUOTE_CHARS = 400
BM25_K1 = 1.2
BM25_B = 0.5

_STOPWORD_LIST = """
    a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't
    she she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who who's
    whom why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
    also just may might must shall get got getting tell know please thanks thank hi hello hey ok okay yes
    anything something everything anyone someone much many any lot lots like want need give let us
    take takes taking took make makes making made go goes going went come comes put see say says find look
    keep mean means thing things way
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())

APOSTROPHE = "\u2019"  # typographic apostrophe, as in "don\u2019t"
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])")
_BULLET = re.compile(r"^\s*(?:[-*•+>]|\d{1,3}[.)]|#{1,6})\s+")
_VOWEL = re.compile(r"[aeiouy]")
_DOUBLE = re.compile(r"([b-df-hj-np-rt-z])\1$")
_TOKEN = re.compile(r"\s*\S+|\s+$")


def stem(word: str) -> str:
    """A light English stemmer: folds plurals, -ing/-ed/-ly/-ation and a final -e/-y.

    Not Porter: it only has to map a question's word and a document's word of the same
    family to the same key ("refunds"/"refunded"/"refunding" -> "refund",
    "shipping"/"shipped"/"ships" -> "ship", "policies"/"policy" -> "polic"). Light verbs
    ("take", "make") are stopwords: "how long do refunds take" is about refunds.
    """
    w = word.lower().replace(APOSTROPHE, "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "ches", "shes", "xes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ation", "ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and _VOWEL.search(w[: -len(suffix)]):
            w = w[: -len(suffix)]
            break
    if w.endswith("ly") and len(w) > 5:
        w = w[:-2]
    if w.endswith(("e", "y")) and len(w) > 3:
        w = w[:-1]
    # Undouble everywhere, not only after a suffix, so that both spellings of a family
    # meet: "shipped"/"ship", "cancelled"/"cancel", "billing"/"bill" -> "bil".
    if len(w) >= 4 and _DOUBLE.search(w):
        w = w[:-1]
    return w


def content_stems(text: str) -> list[str]:
    """The stems of a text's content words, in order."""
    stems = []
    for match in _WORD.finditer(text.lower()):
        word = match.group().replace(APOSTROPHE, "'")
        if word in STOPWORDS or (len(word) == 1 and not word.isdigit()):
            continue
        stems.append(stem(word))
    return stems


@dataclass
class Sentence:
    passage: int  # index into the request's passages
    position: int  # order within the passage
    text: str
    stems: list[str]
    score: float = 0.0
    coverage: float = 0.0
    matched: frozenset[str] = frozenset()


def split_sentences(text: str) -> list[str]:
    sentences = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        sentences += [part.strip() for part in _SENTENCE_BREAK.split(line) if part.strip()]
    return sentences


def _quote(text: str) -> str:
    if len(text) <= MAX_QUOTE_CHARS:
        return text
    cut = text[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def rank_sentences(question: str, passages: list[Passage], *, limit: int = 4) -> list[Sentence]:
    """Up to ``limit`` relevant sentences, most relevant first (none when nothing is).

    The best sentence must cover enough of the question. Each further one must either
    answer another part of it (terms not covered yet: "how long does shipping take and
    when are refunds issued" takes a sentence for each) or be nearly as good as the best.
    """
    query = content_stems(question)
    if not query:
        return []
    sentences: list[Sentence] = []
    for index, passage in enumerate(passages):
        for position, text in enumerate(split_sentences(passage.text)):
            stems = content_stems(text)
            if len(text.split()) >= MIN_WORDS and stems:
                sentences.append(Sentence(index, position, text, stems))
    if not sentences:
        return []

    total = len(sentences)
    document_frequency: Counter[str] = Counter()
    for sentence in sentences:
        document_frequency.update(set(sentence.stems))
    terms = set(query)

    def idf(term: str) -> float:
        df = document_frequency.get(term, 0)
        # BM25's idf, floored so that a word in every sentence still counts a little.
        return max(0.1, math.log(1 + (total - df + 0.5) / (df + 0.5)))

    # A question word found in no sentence ("how *long* do refunds take") says little
    # about which sentence answers it: it weighs a little in the coverage, not the most.
    weights = {term: idf(term) if term in document_frequency else UNSEEN_TERM_WEIGHT for term in terms}
    query_weight = sum(weights.values())
    bigrams = {(a, b) for a, b in itertools.pairwise(query) if a != b}
    average_length = sum(len(s.stems) for s in sentences) / total

    candidates: list[Sentence] = []
    for sentence in sentences:
        counts = Counter(sentence.stems)
        sentence.matched = frozenset(terms & counts.keys())
        if not sentence.matched:
            continue
        length_norm = 1 - BM25_B + BM25_B * len(sentence.stems) / average_length
        bm25 = sum(
            weights[t] * counts[t] * (BM25_K1 + 1) / (counts[t] + BM25_K1 * length_norm) for t in sentence.matched
        )
        sentence.coverage = sum(weights[t] for t in sentence.matched) / query_weight
        pairs = set(itertools.pairwise(sentence.stems))
        phrase_bonus = sum(weights[a] + weights[b] for a, b in bigrams & pairs) * 0.5
        # Retrieval already ordered the passages; a small prior breaks ties in its favour.
        prior = 0.05 / (1 + sentence.passage)
        sentence.score = bm25 * (0.5 + sentence.coverage) + phrase_bonus + prior
        candidates.append(sentence)
    if not candidates:
        return []
    candidates.sort(key=lambda s: (-s.score, s.passage, s.position))
    best = candidates[0]
    if best.coverage < MIN_COVERAGE:
        return []
    # The question's last content word is usually what it is about ("opening *hours*",
    # "deliver to *Germany*"). When no passage has it, one other word in common is a
    # coincidence ("Opened software cannot be returned"), not an answer.
    head = query[-1]
    if head not in document_frequency and len(best.matched) < 2:
        return []

    chosen = [best]
    covered = set(best.matched)
    pool = candidates[1:]
    while pool and len(chosen) < limit:
        gains = {id(s): sum(weights[t] for t in s.matched - covered) / query_weight for s in pool}
        pool.sort(key=lambda s: (-gains[id(s)], -s.score))
        accepted = next(
            (
                s
                for s in pool
                if gains[id(s)] >= MIN_NEW_COVERAGE
                or (s.coverage >= MIN_COVERAGE and s.score >= best.score * MIN_RELATIVE_SCORE)
            ),
            None,
        )
        if accepted is None:
            break
        chosen.append(accepted)
        covered |= accepted.matched
        pool.remove(accepted)
    return chosen


def compose_answer(question: str, passages: list[Passage], *, max_sentences: int, continuing: bool = False) -> str:
    chosen = rank_sentences(question, passages, limit=max_sentences)
    if not chosen:
        return CONTINUATION_NOT_FOUND if continuing else NOT_FOUND
    # Quotes in document order, one line per passage, each cited by its number.
    chosen.sort(key=lambda s: (s.passage, s.position))
    lines: list[str] = []
    for passage in sorted({s.passage for s in chosen}):
        quote = " ".join(_quote(s.text) for s in chosen if s.passage == passage)
        lines.append(f'- "{quote}" [{passage + 1}]')
    intro = CONTINUATION_INTRO if continuing else INTRO
    return intro + "\n\n" + "\n".join(lines)


class ExtractiveProvider(Provider):
    name = "extractive"

    def is_configured(self) -> bool:
        return True

    def default_model(self) -> str:
        return MODEL_NAME

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        question = last_user_text(call.messages)
        answer = compose_answer(
            question,
            call.passages,
            max_sentences=settings.LLM_EXTRACTIVE_MAX_SENTENCES,
            continuing=bool(call.continuation),
        )
        if call.continuation:
            # Appended below the interrupted answer, in a paragraph of its own.
            ending = call.continuation[-2:]
            answer = ("" if ending == "\n\n" else "\n" if ending.endswith("\n") else "\n\n") + answer
        for token in _TOKEN.findall(answer):
            yield TextDelta(token)
        yield TurnEnd(
            text=answer,
            tool_calls=[],
            usage=Usage(provider=self.name, model=MODEL_NAME, input_tokens=0, output_tokens=0, cost_usd=Decimal(0)),
            finish_reason="stop",
        )
