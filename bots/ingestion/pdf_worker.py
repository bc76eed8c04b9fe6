"""Extract a PDF's text page by page in a child process that limits itself.

Run by :mod:`bots.ingestion.extractors` with the same interpreter::

    python -I pdf_worker.py CPU_SECONDS MEMORY_MB MAX_CHARS < document.pdf

It sets its own RLIMIT_CPU and RLIMIT_AS before reading a byte (a crafted PDF can
burn CPU or inflate to gigabytes), so the worker that started it is never at risk;
the parent adds a wall-clock timeout. Only the standard library and pypdf are
imported: no Django here.

Output, on stdout, one JSON object: ``{"pages": [str, ...]}`` or
``{"error": CODE, "detail": str}``. Exit codes: 0 with pages, 2 with an error
object, 3 when memory ran out (nothing can safely be written then); a CPU overrun
ends the process with SIGXCPU (then SIGKILL).
"""

import io
import json
import os
import resource
import sys

EXIT_ERROR = 2
EXIT_MEMORY = 3


def _limit(cpu_seconds: int, memory_mb: int) -> None:
    # The hard CPU limit is one second above the soft one: SIGXCPU first, SIGKILL if ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _write(payload: dict) -> None:
    # Bytes, not text: the child's locale may not be UTF-8, and escaping every
    # non-ASCII character would multiply the size of the pipe's contents.
    sys.stdout.buffer.write(json.dumps(payload, ensure_ascii=False).encode("utf-8", "replace"))
    sys.stdout.buffer.flush()


def _fail(code: str, detail: str) -> int:
    _write({"error": code, "detail": detail[:500]})
    return EXIT_ERROR


def extract(data: bytes, max_chars: int) -> int:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password only to restrict printing.
            try:
                reader.decrypt("")
            except Exception:
                return _fail("encrypted", "The PDF is password-protected.")
        pages = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > max_chars:
                return _fail("too_long", f"The PDF holds more than {max_chars} characters of text.")
            pages.append(text)
    except MemoryError:
        raise
    except FileNotDecryptedError:
        return _fail("encrypted", "The PDF is password-protected.")
    except LimitReachedError as exc:
        return _fail("limit", f"The PDF exceeds a safety limit of the parser ({exc}).")
    except Exception as exc:
        # A malformed PDF can make pypdf fail in many ways (zlib, struct, recursion, ...):
        # to the user they all mean the same thing.
        return _fail("parse", f"The PDF could not be read ({type(exc).__name__}: {exc}).")
    _write({"pages": pages})
    return 0


def main(argv: list[str]) -> int:
    cpu_seconds, memory_mb, max_chars = int(argv[1]), int(argv[2]), int(argv[3])
    _limit(cpu_seconds, memory_mb)
    try:
        data = sys.stdin.buffer.read()
        return extract(data, max_chars)
    except MemoryError:
        # Anything more (even formatting a message) may fail again: the exit code says it.
        os._exit(EXIT_MEMORY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
