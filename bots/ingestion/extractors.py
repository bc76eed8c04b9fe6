"""Text out of PDF, plain text, Markdown and HTML.

Every extractor returns an :class:`ExtractedDocument`: the normalised text (its
SHA-256 is the document's ``content_hash``), and where the source has them, the
offsets where pages start (PDF) and where headings start (Markdown, HTML) so that
chunks can carry page numbers and heading paths.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import signal
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from bots.ingestion.validation import HTML, MD, PDF, TXT
from chatbase.core.errors import ValidationFailed

logger = logging.getLogger(__name__)

PDF_WORKER = Path(__file__).with_name("pdf_worker.py")

TEXT = "text"
MARKDOWN = "markdown"


class ExtractionFailed(ValidationFailed):
    """The document could not be turned into text; ``detail`` says why, for its owner."""

    code = "extraction_failed"
    default_detail = "The document could not be read."


@dataclass
class ExtractedDocument:
    text: str
    format: str = TEXT  # TEXT or MARKDOWN: decides the splitter
    title: str = ""
    # Offset in `text` where page n (1-based) starts is page_starts[n - 1]; None if not paged.
    page_starts: list[int] | None = None
    # (offset, heading path) in text order: the path applies from its offset to the next entry.
    sections: list[tuple[int, list[str]]] = field(default_factory=list)


# --- normalisation ----------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """One form for the same content, so that its hash only changes when the content does."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Bytes of a text file to str: a BOM, then the declared charset, then UTF-8, then detection."""
    from charset_normalizer import from_bytes

    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            logger.info("Declared charset %r does not decode the text; detecting instead", charset)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise ExtractionFailed("The text's character encoding could not be recognised.", code="unknown_encoding")
    # Single-byte Latin encodings often tie (cp1250 and cp1252 read "é" alike and differ
    # on "è"); on a tie, windows-1252 (the web's legacy default) is by far the likelier.
    tied = [m for m in matches if m.chaos == best.chaos and m.coherence == best.coherence]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass  # bytes cp1252 leaves undefined: not cp1252 after all
    return str(best)


def _check_length(text: str) -> str:
    limit = settings.DOCUMENT_MAX_TEXT_CHARS
    if len(text) > limit:
        raise ExtractionFailed(
            f"The document holds {len(text):,} characters of text; the limit is {limit:,}.", code="too_much_text"
        )
    if not text.strip():
        raise ExtractionFailed(
            "No text could be extracted from this document (a scanned PDF holds only images).", code="no_text"
        )
    return text


# --- Markdown headings --------------------------------------------------------

ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _clean_heading(title: str) -> str:
    title = re.sub(r"[*_`]+", "", title or "")
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # [text](link) -> text
    return " ".join(title.split())


def markdown_sections(text: str) -> list[tuple[int, list[str]]]:
    """Where each heading starts and the heading path (outermost first) from there on."""
    sections: list[tuple[int, list[str]]] = []
    path: list[tuple[int, str]] = []
    fence: str | None = None
    previous: tuple[int, str] | None = None  # the last paragraph line: a setext heading's text
    offset = 0

    def enter(level: int, title: str, at: int) -> None:
        nonlocal path
        title = _clean_heading(title)
        if not title:
            return
        path = [item for item in path if item[0] < level] + [(level, title)]
        sections.append((at, [t for _, t in path]))

    for line in text.split("\n"):
        line_offset, offset = offset, offset + len(line) + 1
        fence_match = _FENCE.match(line)
        if fence is not None:
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = None
            previous = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            previous = None
            continue
        atx = ATX_HEADING.match(line)
        if atx:
            enter(len(atx.group(1)), atx.group(2) or "", line_offset)
            previous = None
            continue
        setext = _SETEXT.match(line)
        if setext and previous is not None:
            enter(1 if setext.group(1)[0] == "=" else 2, previous[1], previous[0])
            previous = None
            continue
        previous = (line_offset, line) if line.strip() and not line.startswith(("    ", "\t")) else None
    return sections


# --- formats ------------------------------------------------------------------


def extract_text(data: bytes, *, charset: str | None = None) -> ExtractedDocument:
    return ExtractedDocument(text=_check_length(normalize_text(decode_text(data, charset))))


def extract_markdown(data: bytes, *, charset: str | None = None) -> ExtractedDocument:
    text = _check_length(normalize_text(decode_text(data, charset)))
    sections = markdown_sections(text)
    title = sections[0][1][0] if sections else ""
    return ExtractedDocument(text=text, format=MARKDOWN, title=title, sections=sections)


_HTML_DROP = {
    "script",
    "style",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "noscript",
    "svg",
    "template",
    "iframe",
    "object",
    "embed",
    "canvas",
    "button",
    "select",
    "dialog",
}
_HTML_BLOCKS = {
    "address",
    "article",
    "blockquote",
    "body",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "hr",
    "html",
    "li",
    "main",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "ul",
    "caption",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WHITESPACE = re.compile(r"\s+")


class _HtmlRenderer:
    """Renders the readable part of an HTML tree as light Markdown (headings, lists, tables)."""

    def __init__(self):
        self.blocks: list[str] = []
        self.inline: list[str] = []
        self.prefix = ""

    def flush(self) -> None:
        lines = [" ".join(part.split()) for part in "".join(self.inline).split("\n")]
        text = "\n".join(line for line in lines if line)
        self.inline = []
        if not text:
            return
        if text.startswith("#"):
            text = "\\" + text  # a paragraph, not a heading
        self.blocks.append(self.prefix + text)
        self.prefix = ""

    def walk(self, node, list_depth: int = 0) -> None:
        from bs4 import NavigableString, Tag
        from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

        for child in node.children:
            if isinstance(child, NavigableString):
                if isinstance(child, (Comment, Doctype, Declaration, ProcessingInstruction)):
                    continue
                self.inline.append(_WHITESPACE.sub(" ", str(child)))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HEADINGS:
                self.flush()
                title = " ".join(child.get_text(" ").split())
                if title:
                    self.blocks.append("#" * _HEADINGS[name] + " " + title)
            elif name == "br":
                self.inline.append("\n")
            elif name == "pre":
                self.flush()
                code = child.get_text().strip("\n")
                if code.strip():
                    self.blocks.append(f"```\n{code}\n```")
            elif name == "tr":
                self.flush()
                cells = [" ".join(c.get_text(" ").split()) for c in child.find_all(["td", "th"], recursive=False)]
                if any(cells):
                    self.blocks.append(" | ".join(cells))
            elif name == "li":
                self.flush()
                self.prefix = "  " * list_depth + "- "
                self.walk(child, list_depth + 1)
                self.flush()
            elif name in ("ul", "ol") or name in _HTML_BLOCKS:
                self.flush()
                self.walk(child, list_depth)
                self.flush()
            else:
                self.walk(child, list_depth)


def _hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    style = str(attrs.get("style", "")).replace(" ", "").lower()
    return "display:none" in style or str(attrs.get("role", "")).lower() == "navigation"


def extract_html(data: bytes, *, charset: str | None = None) -> ExtractedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser", from_encoding=charset or None)
    title = ""
    if soup.title and soup.title.get_text(strip=True):
        title = " ".join(soup.title.get_text(" ").split())
    else:
        og = soup.find("meta", attrs={"property": "og:title"})
        if og and og.get("content"):
            title = " ".join(str(og["content"]).split())
    for tag in soup.find_all(_HTML_DROP | {"head", "title", "meta", "link"}):
        tag.decompose()
    for tag in soup.find_all(_hidden):
        tag.decompose()
    renderer = _HtmlRenderer()
    renderer.walk(soup)
    renderer.flush()
    text = _check_length(normalize_text("\n\n".join(renderer.blocks)))
    sections = markdown_sections(text)
    if not title and sections:
        title = sections[0][1][0]
    return ExtractedDocument(text=text, format=MARKDOWN, title=title[:300], sections=sections)


def _pdf_pages(data: bytes) -> list[str]:
    cpu = settings.PDF_PARSE_CPU_SECONDS
    memory = settings.PDF_PARSE_MEMORY_MB
    timeout = settings.PDF_PARSE_TIMEOUT_SECONDS
    limits = f"(limits: {cpu} s of CPU, {memory} MB of memory, {timeout:g} s in all)"
    command = [sys.executable, "-I", str(PDF_WORKER), str(cpu), str(memory), str(settings.DOCUMENT_MAX_TEXT_CHARS)]
    try:
        result = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExtractionFailed(
            f"Reading this PDF took too long and was stopped {limits}.", code="pdf_limit_exceeded"
        ) from exc
    stderr_tail = result.stderr[-2000:].decode("utf-8", "replace")
    if result.returncode == 0:
        return json.loads(result.stdout)["pages"]
    if result.returncode == 2:
        payload = json.loads(result.stdout)
        code = "pdf_limit_exceeded" if payload["error"] in ("limit", "too_long") else f"pdf_{payload['error']}"
        raise ExtractionFailed(payload["detail"], code=code)
    if result.returncode == 3:
        raise ExtractionFailed(
            f"Reading this PDF needed too much memory and was stopped {limits}.", code="pdf_limit_exceeded"
        )
    if result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ExtractionFailed(
            f"Reading this PDF needed too much CPU time and was stopped {limits}.", code="pdf_limit_exceeded"
        )
    logger.warning("PDF worker exited with %s: %s", result.returncode, stderr_tail)
    raise ExtractionFailed("The PDF reader failed on this file; it may be damaged.", code="pdf_parse")


def extract_pdf(data: bytes, **_) -> ExtractedDocument:
    pages = [normalize_text(page) for page in _pdf_pages(data)]
    page_starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for page in pages:
        page_starts.append(offset)
        parts.append(page)
        offset += len(page) + 2  # the "\n\n" between pages
    text = _check_length("\n\n".join(parts))
    return ExtractedDocument(text=text, format=TEXT, page_starts=page_starts)


_EXTRACTORS = {PDF: extract_pdf, TXT: extract_text, MD: extract_markdown, HTML: extract_html}


def extract(data: bytes, kind: str, *, charset: str | None = None) -> ExtractedDocument:
    """The text of a document of ``kind`` (``pdf``, ``txt``, ``md`` or ``html``)."""
    try:
        extractor = _EXTRACTORS[kind]
    except KeyError:
        raise ExtractionFailed(f"Documents of type {kind!r} cannot be read.", code="unsupported") from None
    return extractor(data, charset=charset)
