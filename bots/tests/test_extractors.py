"""Extraction: real PDFs (written in code) through the limited child process, text, Markdown, HTML."""

from __future__ import annotations

import codecs
import io

import pytest
from pypdf import PdfReader, PdfWriter

from bots.ingestion.extractors import ExtractionFailed, extract, markdown_sections
from bots.tests.pdfs import make_bomb_pdf, make_many_pages_pdf, make_pdf

# --- PDF ---------------------------------------------------------------------------


def test_pdf_text_is_extracted_page_by_page_with_page_offsets():
    pdf = make_pdf(["Welcome to the handbook.", ["Refund policy", "Refunds take 14 days."], "Contact us."])
    doc = extract(pdf, "pdf")
    assert doc.page_starts is not None and len(doc.page_starts) == 3
    pages = [
        doc.text[start:end].strip() for start, end in zip(doc.page_starts, [*doc.page_starts[1:], None], strict=True)
    ]
    assert pages[0] == "Welcome to the handbook."
    assert "Refunds take 14 days." in pages[1]
    assert pages[2] == "Contact us."


def test_a_damaged_pdf_fails_with_a_readable_message():
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(b"%PDF-1.7\n" + b"garbage " * 200, "pdf")
    assert excinfo.value.code == "pdf_parse"
    assert "could not be read" in excinfo.value.detail


def test_a_password_protected_pdf_is_refused_clearly():
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(["secret"]))))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(buffer.getvalue(), "pdf")
    assert excinfo.value.code == "pdf_encrypted"
    assert "password" in excinfo.value.detail


def test_a_decompression_bomb_hits_the_parsers_limit():
    bomb = make_bomb_pdf(200)  # 400 KB inflating to 200 MB
    assert len(bomb) < 1_000_000
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(bomb, "pdf")
    assert excinfo.value.code == "pdf_limit_exceeded"


def test_a_pdf_needing_more_memory_than_the_limit_is_stopped(settings):
    settings.PDF_PARSE_MEMORY_MB = 80  # the child needs ~45 MB to start; the stream inflates to 60 MB
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(make_bomb_pdf(60), "pdf")
    assert excinfo.value.code == "pdf_limit_exceeded"
    assert "memory" in excinfo.value.detail


def test_a_pdf_needing_more_cpu_than_the_limit_is_stopped(settings):
    settings.PDF_PARSE_CPU_SECONDS = 1
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(make_many_pages_pdf(3000), "pdf")  # ~10 s of CPU without the limit
    assert excinfo.value.code == "pdf_limit_exceeded"
    assert "CPU" in excinfo.value.detail


def test_a_pdf_taking_too_long_in_wall_clock_time_is_stopped(settings):
    settings.PDF_PARSE_TIMEOUT_SECONDS = 0.05  # less than the child needs to start
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(make_pdf(["hello"]), "pdf")
    assert excinfo.value.code == "pdf_limit_exceeded"
    assert "too long" in excinfo.value.detail


def test_a_pdf_with_too_much_text_is_refused(settings):
    settings.DOCUMENT_MAX_TEXT_CHARS = 50
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(make_pdf(["x" * 40, "y" * 40]), "pdf")
    assert excinfo.value.code == "pdf_limit_exceeded"


def test_a_pdf_without_text_says_so():
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(make_pdf([[]]), "pdf")
    assert excinfo.value.code == "no_text"
    assert "scanned" in excinfo.value.detail


# --- text --------------------------------------------------------------------------


def test_utf8_text_is_normalised():
    doc = extract(b"Line one\r\nLine two   \r\n\r\n\r\n\r\nLine three\x00", "txt")
    assert doc.text == "Line one\nLine two\n\nLine three"
    assert doc.format == "text"
    assert doc.page_starts is None


def test_legacy_encodings_are_detected():
    french = (
        "Le café de la gare ouvre à sept heures. Les crêpes sont préparées à la demande, "
        "et la crème brûlée est servie après le déjeuner. À bientôt, chère clientèle !"
    )
    assert extract(french.encode("cp1252"), "txt").text == french
    assert extract(codecs.BOM_UTF16_LE + french.encode("utf-16-le"), "txt").text == french


def test_text_over_the_character_limit_is_refused(settings):
    settings.DOCUMENT_MAX_TEXT_CHARS = 10
    with pytest.raises(ExtractionFailed) as excinfo:
        extract(b"this is more than ten characters", "txt")
    assert excinfo.value.code == "too_much_text"


# --- Markdown ----------------------------------------------------------------------

MARKDOWN = """# Handbook

Intro.

## Refunds

Refund text.

```python
# not a heading
```

### Exceptions ###

Sale items.

Shipping
--------

Ships daily.
"""


def test_markdown_is_kept_and_its_heading_paths_tracked():
    doc = extract(MARKDOWN.encode(), "md")
    assert doc.format == "markdown"
    assert doc.text.startswith("# Handbook")
    assert doc.title == "Handbook"
    paths = [path for _, path in doc.sections]
    assert paths == [
        ["Handbook"],
        ["Handbook", "Refunds"],
        ["Handbook", "Refunds", "Exceptions"],
        ["Handbook", "Shipping"],
    ]
    offsets = [offset for offset, _ in doc.sections]
    assert doc.text[offsets[2] :].startswith("### Exceptions")
    assert doc.text[offsets[3] :].startswith("Shipping\n---")


def test_markdown_heading_formatting_is_cleaned():
    sections = markdown_sections("## **Bold** and [a link](http://x) `code`\n")
    assert sections == [(0, ["Bold and a link code"])]


# --- HTML --------------------------------------------------------------------------

HTML = b"""<!doctype html>
<html><head><title>Acme Support</title><style>body{color:red}</style>
<script>var tracking = "SECRET_SCRIPT";</script></head>
<body>
<header><a href="/">Acme HEADER_LINK</a></header>
<nav><ul><li>NAV_ITEM</li></ul></nav>
<main>
  <h1>Support <em>centre</em></h1>
  <p>We answer <b>every</b> question<br>within a day.</p>
  <h2>Refunds</h2>
  <ul><li>Within 14 days</li><li>Original packaging</li></ul>
  <div hidden>HIDDEN_DIV</div>
  <p style="display: none">INVISIBLE</p>
  <table><tr><th>Plan</th><th>Price</th></tr><tr><td>Basic</td><td>$5</td></tr></table>
  <pre># a comment in code</pre>
  <form><input name="q"><button>SEARCH_BUTTON</button></form>
  <noscript>NOSCRIPT_TEXT</noscript>
  <svg><text>SVG_TEXT</text></svg>
</main>
<aside>ASIDE_TEXT</aside>
<footer>FOOTER_TEXT</footer>
</body></html>"""


def test_html_is_reduced_to_readable_text_with_its_title_and_headings():
    doc = extract(HTML, "html")
    assert doc.title == "Acme Support"
    for dropped in (
        "SECRET_SCRIPT",
        "color:red",
        "HEADER_LINK",
        "NAV_ITEM",
        "HIDDEN_DIV",
        "INVISIBLE",
        "SEARCH_BUTTON",
        "NOSCRIPT_TEXT",
        "SVG_TEXT",
        "ASIDE_TEXT",
        "FOOTER_TEXT",
    ):
        assert dropped not in doc.text
    assert "# Support centre" in doc.text
    assert "We answer every question\nwithin a day." in doc.text
    assert "- Within 14 days\n\n- Original packaging" in doc.text
    assert "Plan | Price\n\nBasic | $5" in doc.text
    assert "```\n# a comment in code\n```" in doc.text
    assert [path for _, path in doc.sections] == [["Support centre"], ["Support centre", "Refunds"]]


def test_html_charset_from_the_header_is_honoured():
    doc = extract("<p>Crème brûlée</p>".encode("cp1252"), "html", charset="windows-1252")
    assert doc.text == "Crème brûlée"


def test_html_without_a_title_element_uses_its_first_heading():
    assert extract(b"<h1>Pricing</h1><p>Cheap.</p>", "html").title == "Pricing"
