"""Split extracted text into chunks sized in the embedding model's own tokens.

Sizes are counted with all-MiniLM-L6-v2's tokenizer (``tokenizer.json`` of the
bundled model), so a chunk never exceeds what the model reads: it truncates at 256
tokens, [CLS] and [SEP] included, and anything past that would be silently left
out of the chunk's vector. semantic-text-splitter keeps the largest semantic units
(sections, paragraphs, sentences) that fit; Markdown (and HTML, rendered as
Markdown) goes through its Markdown-aware splitter.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from bots.ingestion.extractors import ATX_HEADING, MARKDOWN, ExtractedDocument

# all-MiniLM-L6-v2's max_seq_length, and the two special tokens it adds to every input.
MODEL_MAX_TOKENS = 256
SPECIAL_TOKENS = 2


@dataclass
class ChunkDraft:
    position: int
    text: str
    token_count: int
    text_hash: str
    start: int  # offset of the chunk in the extracted text
    metadata: dict = field(default_factory=dict)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_sizes() -> tuple[int, int]:
    tokens, overlap = settings.CHUNK_TOKENS, settings.CHUNK_OVERLAP_TOKENS
    if not 16 <= tokens <= MODEL_MAX_TOKENS - SPECIAL_TOKENS:
        raise ImproperlyConfigured(
            f"CHUNK_TOKENS must be between 16 and {MODEL_MAX_TOKENS - SPECIAL_TOKENS} "
            f"(the embedding model reads at most {MODEL_MAX_TOKENS} tokens); it is {tokens}."
        )
    if not 0 <= overlap < tokens // 2:
        raise ImproperlyConfigured(
            f"CHUNK_OVERLAP_TOKENS must be at least 0 and under half of CHUNK_TOKENS ({tokens})."
        )
    return tokens, overlap


@lru_cache(maxsize=1)
def tokenizer():
    """The embedding model's tokenizer, without the truncation and padding its file configures."""
    from tokenizers import Tokenizer

    from bots.embeddings import local_model_path

    tok = Tokenizer.from_file(str(local_model_path() / "tokenizer.json"))
    # tokenizer.json pads and truncates to 128: counts must be of the real text.
    tok.no_truncation()
    tok.no_padding()
    return tok


@lru_cache(maxsize=8)
def _splitter(fmt: str, tokens: int, overlap: int):
    from semantic_text_splitter import MarkdownSplitter, TextSplitter

    cls = MarkdownSplitter if fmt == MARKDOWN else TextSplitter
    return cls.from_huggingface_tokenizer(tokenizer(), tokens, overlap=overlap)


def count_tokens(texts: list[str]) -> list[int]:
    return [len(encoding.ids) for encoding in tokenizer().encode_batch(texts, add_special_tokens=False)]


def _heading_only(text: str) -> bool:
    return all(ATX_HEADING.match(line) for line in text.splitlines() if line.strip())


def _merge_lone_headings(text: str, pieces: list[tuple[int, str]], tokens: int) -> list[tuple[int, str]]:
    """Join a chunk that is only a heading to the chunk that follows it.

    The Markdown splitter keeps a section's heading apart when the section as a whole
    does not fit; a chunk of three tokens ("# Pricing") matches every query badly and
    leaves the section's text without its title.
    """
    pieces = list(pieces)
    merged: list[tuple[int, str]] = []
    i = 0
    while i < len(pieces):
        start, piece = pieces[i]
        if i + 1 < len(pieces) and _heading_only(piece):
            next_start, next_piece = pieces[i + 1]
            end = start + len(piece)
            if next_start >= end and not text[end:next_start].strip():
                candidate = text[start : next_start + len(next_piece)]
                if count_tokens([candidate])[0] <= tokens:
                    pieces[i + 1] = (start, candidate)
                    i += 1
                    continue
        merged.append((start, piece))
        i += 1
    return merged


def _body_offset(start: int, text: str) -> int:
    """Offset of the chunk's first line that is not a heading: its heading path applies to the chunk."""
    offset = start
    for line in text.split("\n"):
        if line.strip() and not ATX_HEADING.match(line):
            return offset
        offset += len(line) + 1
    return start


def _page_of(page_starts: list[int], offset: int) -> int:
    return max(1, bisect.bisect_right(page_starts, offset))


def chunk_document(document: ExtractedDocument) -> list[ChunkDraft]:
    """The chunks of an extracted document, in order, with their metadata."""
    tokens, overlap = chunk_sizes()
    pieces = _splitter(document.format, tokens, overlap).chunk_indices(document.text)
    pieces = [(start, text) for start, text in pieces if text.strip()]
    if document.format == MARKDOWN:
        pieces = _merge_lone_headings(document.text, pieces, tokens)
    counts = count_tokens([text for _, text in pieces])
    section_starts = [offset for offset, _ in document.sections]
    drafts: list[ChunkDraft] = []
    for position, ((start, text), count) in enumerate(zip(pieces, counts, strict=True)):
        metadata: dict = {}
        if document.page_starts:
            metadata["page_start"] = _page_of(document.page_starts, start)
            metadata["page_end"] = _page_of(document.page_starts, start + len(text) - 1)
        if section_starts:
            index = bisect.bisect_right(section_starts, _body_offset(start, text)) - 1
            if index >= 0:
                metadata["headings"] = list(document.sections[index][1])
        drafts.append(
            ChunkDraft(
                position=position,
                text=text,
                token_count=count,
                text_hash=text_hash(text),
                start=start,
                metadata=metadata,
            )
        )
    return drafts
