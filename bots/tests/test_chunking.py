"""Chunking: sizes in the model's own tokens, exact offsets, page numbers and heading paths."""

from __future__ import annotations

import hashlib
import random
from itertools import pairwise

import pytest
from django.core.exceptions import ImproperlyConfigured

from bots.ingestion.chunking import MODEL_MAX_TOKENS, chunk_document, tokenizer
from bots.ingestion.extractors import ExtractedDocument, extract
from bots.tests.pdfs import make_pdf

_WORDS_TEXT = (
    "refund delivery invoice warranty customer support office chennai hours booking account password "
    "payment plan upgrade cancel shipping order tracking return exchange policy discount"
)
WORDS = _WORDS_TEXT.split()


def _sentences(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "." for _ in range(n))


def test_chunks_fit_the_model_and_are_exact_slices_of_the_text(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 120, 20
    doc = ExtractedDocument(text="\n\n".join(_sentences(6, seed) for seed in range(12)))
    drafts = chunk_document(doc)
    assert len(drafts) > 5
    for position, draft in enumerate(drafts):
        assert draft.position == position
        assert doc.text[draft.start : draft.start + len(draft.text)] == draft.text
        with_specials = len(tokenizer().encode(draft.text).ids)
        assert draft.token_count == with_specials - 2
        assert draft.token_count <= 120
        assert with_specials <= MODEL_MAX_TOKENS
        assert draft.text_hash == hashlib.sha256(draft.text.encode()).hexdigest()


def test_consecutive_chunks_overlap_when_asked(settings):
    settings.CHUNK_TOKENS = 100
    # One long paragraph, so that splits fall inside it and the overlap has room.
    doc = ExtractedDocument(text=_sentences(60, seed=7))
    settings.CHUNK_OVERLAP_TOKENS = 0
    plain = chunk_document(doc)
    assert all(b.start >= a.start + len(a.text) for a, b in pairwise(plain))
    settings.CHUNK_OVERLAP_TOKENS = 30
    overlapping = chunk_document(doc)
    assert any(b.start < a.start + len(a.text) for a, b in pairwise(overlapping))


def test_pdf_chunks_carry_their_page_numbers(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 60, 0
    pages = [[f"Page {n} says: {_sentences(1, n * 10 + i)}" for i in range(6)] for n in range(1, 5)]
    doc = extract(make_pdf(pages), "pdf")
    drafts = chunk_document(doc)
    for draft in drafts:
        start, end = draft.metadata["page_start"], draft.metadata["page_end"]
        assert 1 <= start <= end <= 4
        # The page numbers are those of the text the chunk holds.
        for n in range(1, 5):
            if f"Page {n} says" in draft.text:
                assert start <= n <= end
    assert {d.metadata["page_start"] for d in drafts} == {1, 2, 3, 4}


def test_a_chunk_across_a_page_break_spans_both_pages(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 200, 0
    doc = extract(make_pdf(["First page, short.", "Second page, short too."]), "pdf")
    (draft,) = chunk_document(doc)
    assert (draft.metadata["page_start"], draft.metadata["page_end"]) == (1, 2)


def test_markdown_chunks_carry_their_heading_path(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 80, 0
    text = (
        f"# Handbook\n\n{_sentences(2, 1)}\n\n"
        f"## Refunds\n\n{_sentences(8, 2)}\n\n"
        f"### Exceptions\n\n{_sentences(3, 3)}\n\n"
        f"## Shipping\n\n{_sentences(8, 4)}\n"
    )
    drafts = chunk_document(extract(text.encode(), "md"))
    by_path = {tuple(d.metadata["headings"]) for d in drafts}
    assert by_path == {
        ("Handbook",),
        ("Handbook", "Refunds"),
        ("Handbook", "Refunds", "Exceptions"),
        ("Handbook", "Shipping"),
    }
    shipping = [d for d in drafts if d.metadata["headings"] == ["Handbook", "Shipping"]]
    assert shipping[0].text.startswith("## Shipping")
    assert all("page_start" not in d.metadata for d in drafts)


def test_a_heading_is_not_left_alone_in_a_chunk(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 80, 0
    text = f"# Part one\n\n## Details\n\n{_sentences(3, 5)}\n\n# Part two\n\n{_sentences(3, 6)}\n"
    drafts = chunk_document(extract(text.encode(), "md"))
    for draft in drafts:
        assert any(not line.startswith("#") for line in draft.text.splitlines() if line.strip()), draft.text
    first = drafts[0]
    assert first.text.startswith("# Part one\n\n## Details")
    assert first.metadata["headings"] == ["Part one", "Details"]


def test_html_chunks_carry_their_heading_path(settings):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 80, 0
    html = (
        f"<html><body><h1>Support</h1><p>{_sentences(2, 8)}</p><h2>Opening hours</h2>"
        f"<p>{_sentences(6, 9)}</p></body></html>"
    ).encode()
    drafts = chunk_document(extract(html, "html"))
    assert drafts[0].metadata["headings"][0] == "Support"
    assert drafts[-1].metadata["headings"] == ["Support", "Opening hours"]


def test_plain_text_chunks_have_no_heading_or_page_metadata():
    (draft,) = chunk_document(ExtractedDocument(text="Just a sentence."))
    assert draft.metadata == {}


@pytest.mark.parametrize(("tokens", "overlap"), [(300, 30), (255, 30), (8, 0), (200, 100), (200, -1)])
def test_sizes_the_model_cannot_take_are_refused(settings, tokens, overlap):
    settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS = tokens, overlap
    with pytest.raises(ImproperlyConfigured):
        chunk_document(ExtractedDocument(text="Some text."))
