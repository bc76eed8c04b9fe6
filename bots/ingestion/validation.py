"""Upload rules: what a document file may be, checked before anything is stored.

The kind of a file comes from its extension (the declared content type only when
there is no extension, since browsers send ``application/octet-stream`` freely), and
its first bytes must agree with that kind: a ``.pdf`` must start like a PDF, and a
text format must not be a PDF, an archive, an image or an executable in disguise.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from chatbase.core.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

PDF, TXT, MD, HTML = "pdf", "txt", "md", "html"

CONTENT_TYPES = {
    PDF: "application/pdf",
    TXT: "text/plain",
    MD: "text/markdown",
    HTML: "text/html",
}
EXTENSIONS = {
    ".pdf": PDF,
    ".txt": TXT,
    ".text": TXT,
    ".md": MD,
    ".markdown": MD,
    ".htm": HTML,
    ".html": HTML,
}
_DECLARED_TYPES = {
    "application/pdf": PDF,
    "application/x-pdf": PDF,
    "text/plain": TXT,
    "text/markdown": MD,
    "text/x-markdown": MD,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
}
SUPPORTED_DESCRIPTION = "PDF, TXT, MD (Markdown) and HTML"

# Signatures of binary formats that no text document starts with. Formats whose
# signature is plain ASCII (MZ, RIFF, ID3, ...) are left to the NUL-byte check below,
# which they fail anyway, so that a text starting with those letters is not refused.
_BINARY_SIGNATURES: list[tuple[bytes, str]] = [
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\xcf\xfa\xed\xfe", "an executable (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "an executable (Mach-O)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document"),
]
_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class FileKind:
    kind: str  # one of PDF, TXT, MD, HTML

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]


def max_upload_bytes() -> int:
    return settings.DOCUMENT_MAX_UPLOAD_BYTES


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def check_size(size: int, *, what: str = "The file") -> None:
    limit = max_upload_bytes()
    if size > limit:
        raise PayloadTooLarge(f"{what} is {_human_size(size)}; the limit is {_human_size(limit)}.")
    if size == 0:
        raise ValidationFailed(f"{what} is empty.", code="empty_file")


def kind_from_name(filename: str, declared_type: str | None = None) -> str:
    suffix = PurePath(filename or "").suffix.lower()
    if suffix:
        kind = EXTENSIONS.get(suffix)
        if kind is None:
            raise UnsupportedMediaType(
                f"Files of type {suffix} are not supported; upload {SUPPORTED_DESCRIPTION}.",
            )
        return kind
    mime = (declared_type or "").split(";")[0].strip().lower()
    kind = _DECLARED_TYPES.get(mime)
    if kind is None:
        raise UnsupportedMediaType(
            f"The file has no extension and its type ({mime or 'unknown'}) is not supported; "
            f"upload {SUPPORTED_DESCRIPTION}."
        )
    return kind


def kind_from_content_type(content_type: str) -> str | None:
    """The kind of a fetched body from its Content-Type header (None when unsupported)."""
    return _DECLARED_TYPES.get((content_type or "").split(";")[0].strip().lower())


def binary_signature(head: bytes) -> str | None:
    """What binary format ``head`` starts with, or None if it could be text."""
    if head.lstrip()[:5] == b"%PDF-":
        return "a PDF"
    for signature, description in _BINARY_SIGNATURES:
        if head.startswith(signature):
            return description
    return None


def looks_like_text(head: bytes) -> bool:
    if not head:
        return True
    if head.startswith(_TEXT_BOMS):
        return True
    # Text in UTF-8 or a legacy 8-bit encoding has no NUL bytes; UTF-16 without a BOM is too rare to allow.
    if b"\x00" in head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) < 0.05


def check_content_matches(kind: str, head: bytes, *, filename: str = "", declared: str = "named") -> None:
    """Refuse content whose first bytes contradict the declared kind."""
    label = f"{filename} " if filename else "The file "
    declared = f"is {declared} as"
    if kind == PDF:
        # The PDF specification lets readers accept a little junk before the header.
        if b"%PDF-" not in head[:1024]:
            raise ValidationFailed(f"{label}{declared} a PDF but is not a PDF file.", code="type_mismatch")
        return
    found = binary_signature(head)
    if found:
        raise ValidationFailed(
            f"{label}{declared} {kind.upper()} text but its content is {found}.",
            code="type_mismatch",
        )
    if not looks_like_text(head):
        raise ValidationFailed(
            f"{label}{declared} {kind.upper()} text but its content is binary.", code="type_mismatch"
        )


def read_head(upload: UploadedFile, n: int = SNIFF_BYTES) -> bytes:
    upload.seek(0)
    head = upload.read(n)
    upload.seek(0)
    return head


def validate_upload(upload: UploadedFile) -> FileKind:
    """Check an uploaded file against every rule; raises the domain error of the first it breaks."""
    filename = upload.name or ""
    kind = kind_from_name(filename, getattr(upload, "content_type", None))
    check_size(upload.size or 0, what=f"The file {PurePath(filename).name}".rstrip())
    head = read_head(upload)
    if not head:
        raise ValidationFailed("The file is empty.", code="empty_file")
    check_content_matches(kind, head, filename=PurePath(filename).name)
    return FileKind(kind)


def validate_text(text: str) -> bytes:
    """The UTF-8 bytes of a pasted text, checked against the same limits as a file."""
    if not text or not text.strip():
        raise ValidationFailed("The text is empty.", code="empty_file")
    data = text.encode("utf-8")
    check_size(len(data), what="The text")
    return data
