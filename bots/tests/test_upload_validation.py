"""Upload rules: each bad upload gets its 4xx error and leaves nothing behind (no row, no file)."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from bots.models import Document
from bots.services.documents import document_create
from bots.tests.conftest import stored_files
from bots.tests.factories import BotFactory
from bots.tests.pdfs import make_pdf
from chatbase.core.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def _upload(name: str, content: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


@pytest.fixture
def bot():
    return BotFactory()


def _assert_refused(bot, media_root, upload, error, status, code=None):
    with pytest.raises(error) as excinfo:
        document_create(bot=bot, upload=upload)
    assert excinfo.value.status_code == status
    if code:
        assert excinfo.value.code == code
    assert excinfo.value.detail  # a sentence for the user, not an empty error
    assert Document.objects.count() == 0
    assert stored_files(media_root) == []
    return excinfo.value


def test_too_large_is_413(bot, media_root, settings):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 1000
    error = _assert_refused(bot, media_root, _upload("big.txt", b"a" * 1001), PayloadTooLarge, 413, "too_large")
    assert "limit" in error.detail


def test_exactly_the_limit_is_accepted(bot, media_root, settings):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 1000
    document = document_create(bot=bot, upload=_upload("edge.txt", b"a" * 1000))
    assert document.size_bytes == 1000


def test_empty_file_is_400_empty_file(bot, media_root):
    _assert_refused(bot, media_root, _upload("empty.txt", b""), ValidationFailed, 400, "empty_file")


@pytest.mark.parametrize("name", ["report.docx", "photo.png", "setup.exe", "archive.zip", "notes.rtf"])
def test_unsupported_extension_is_415(bot, media_root, name):
    _assert_refused(bot, media_root, _upload(name, b"some bytes"), UnsupportedMediaType, 415)


def test_no_extension_and_an_unsupported_type_is_415(bot, media_root):
    _assert_refused(bot, media_root, _upload("README", b"hello", "application/octet-stream"), UnsupportedMediaType, 415)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("fake.pdf", b"This is plain text pretending to be a PDF."),
        ("fake.pdf", PNG),
        ("pdf.txt", make_pdf(["hello"])),
        ("archive.txt", _zip()),
        ("image.txt", PNG),
        ("program.txt", ELF),
        ("random.txt", os.urandom(2048) + b"\x00"),
        ("notes.md", gzip.compress(b"# hello")),
        ("page.html", JPEG),
        ("page.htm", make_pdf(["hello"])),
    ],
)
def test_content_contradicting_the_extension_is_400_type_mismatch(bot, media_root, name, content):
    _assert_refused(bot, media_root, _upload(name, content), ValidationFailed, 400, "type_mismatch")


@pytest.mark.parametrize(
    ("name", "content", "content_type", "expected"),
    [
        ("manual.pdf", make_pdf(["Page one"]), "application/pdf", "application/pdf"),
        ("notes.txt", "Plain UTF-8 text — with a dash.".encode(), "text/plain", "text/plain"),
        ("latin.txt", "Café crème brûlée".encode("latin-1"), "text/plain", "text/plain"),
        ("wide.txt", codecs.BOM_UTF16_LE + "UTF-16 text".encode("utf-16-le"), "text/plain", "text/plain"),
        ("guide.md", b"# Guide\n\nSome *markdown*.", "text/markdown", "text/markdown"),
        ("page.HTML", b"<html><body><p>Hi</p></body></html>", "text/html", "text/html"),
        ("page.htm", b"<p>Hi</p>", "application/octet-stream", "text/html"),
        ("NOTES", b"no extension, declared as text", "text/plain", "text/plain"),
        ("MZ memo.txt", b"MZ Corp announced its results.", "text/plain", "text/plain"),
    ],
)
def test_supported_uploads_are_stored_pending_and_scheduled(
    bot, media_root, django_capture_on_commit_callbacks, name, content, content_type, expected
):
    with django_capture_on_commit_callbacks() as callbacks:
        document = document_create(bot=bot, upload=_upload(name, content, content_type))
    assert len(callbacks) == 1  # ingestion is scheduled after commit, not run here
    document.refresh_from_db()
    assert document.status == Document.Status.PENDING
    assert document.source_type == Document.SourceType.FILE
    assert document.content_type == expected
    assert document.original_filename == name
    assert document.title == name
    assert document.size_bytes == len(content)
    files = stored_files(media_root)
    assert len(files) == 1
    assert files[0].read_bytes() == content
    assert str(files[0]).startswith(str(media_root / "documents"))


def test_exactly_one_source_is_required(bot, media_root):
    for kwargs in ({}, {"text": "a", "url": "http://127.0.0.1/"}, {"text": "a", "upload": _upload("a.txt", b"a")}):
        with pytest.raises(ValidationFailed) as excinfo:
            document_create(bot=bot, **kwargs)
        assert excinfo.value.code == "invalid_source"
    assert Document.objects.count() == 0
    assert stored_files(media_root) == []


def test_text_is_stored_as_a_txt_file_with_a_title_from_its_first_line(bot, media_root):
    document = document_create(bot=bot, text="\n\n  Opening hours  \nWe open at nine.\n")
    assert document.source_type == Document.SourceType.TEXT
    assert document.title == "Opening hours"
    assert document.file.name.endswith(".txt")
    assert stored_files(media_root)[0].read_text() == "\n\n  Opening hours  \nWe open at nine.\n"


def test_empty_or_too_long_text_is_refused(bot, media_root, settings):
    with pytest.raises(ValidationFailed) as excinfo:
        document_create(bot=bot, text="  \n ")
    assert excinfo.value.code == "empty_file"
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 10
    with pytest.raises(PayloadTooLarge):
        document_create(bot=bot, text="more than ten bytes")
    assert Document.objects.count() == 0
    assert stored_files(media_root) == []


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/file.txt", "file:///etc/passwd", "not a url", "http://user:pw@127.0.0.1/"]
)
def test_bad_urls_are_refused_at_create_time(bot, media_root, url):
    with pytest.raises(ValidationFailed) as excinfo:
        document_create(bot=bot, url=url)
    assert excinfo.value.code == "invalid_url"
    assert Document.objects.count() == 0


def test_a_title_longer_than_the_column_is_refused(bot, media_root):
    with pytest.raises(ValidationFailed):
        document_create(bot=bot, title="x" * 301, text="hello")
    assert Document.objects.count() == 0
