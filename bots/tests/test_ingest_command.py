"""manage.py ingest: files ingested synchronously with a progress bar and a summary."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from bots.models import Chunk, Document
from bots.tests.factories import BotFactory
from bots.tests.pdfs import make_pdf

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot(media_root, local_embedder):
    return BotFactory()


def _run(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("ingest", *map(str, args), stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


def test_ingests_files_with_a_progress_bar_and_a_summary(bot, tmp_path, django_capture_on_commit_callbacks):
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nThe office opens at nine.\n")
    manual = tmp_path / "manual.pdf"
    manual.write_bytes(make_pdf(["Page one of the manual.", "Page two of the manual."]))

    with django_capture_on_commit_callbacks() as callbacks:
        out, err, error = _run(bot.pk, notes, manual)
    assert error is None
    assert callbacks == []  # synchronous: nothing left for a worker
    assert Document.objects.filter(bot=bot, status=Document.Status.READY).count() == 2
    chunks = Chunk.objects.filter(bot=bot).count()
    assert chunks >= 2
    assert f"Ingested 2 of 2 files into bot {bot.pk} ({bot.name}): {chunks} chunks." in out
    assert "\r[" in err
    assert "100% [1/2] notes.md" in err
    assert "100% [2/2] manual.pdf" in err
    assert "[2/2] manual.pdf: ready" in err


def test_an_unknown_bot_is_a_command_error(db, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(CommandError, match="no bot with id 987654"):
        call_command("ingest", "987654", str(path))


def test_bad_paths_are_a_command_error_before_anything_is_ingested(bot, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("hello")
    with pytest.raises(CommandError, match="No such file"):
        call_command("ingest", str(bot.pk), str(good), str(tmp_path / "missing.txt"))
    with pytest.raises(CommandError, match="Not a file"):
        call_command("ingest", str(bot.pk), str(good), str(tmp_path))
    assert Document.objects.count() == 0


def test_refused_and_failed_files_are_reported_and_the_rest_ingested(bot, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Refunds take fourteen days.")
    unsupported = tmp_path / "photo.png"
    unsupported.write_bytes(b"\x89PNG\r\n\x1a\n")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"garbage " * 100)

    out, err, error = _run(bot.pk, good, unsupported, broken)
    assert error is not None and "2 of 3 files could not be ingested" in str(error)
    assert "Ingested 1 of 3 files" in out
    assert "photo.png: refused: Files of type .png are not supported" in err
    assert "broken.pdf: error: The PDF could not be read" in err
    assert Document.objects.filter(bot=bot, status=Document.Status.READY).count() == 1
    assert Document.objects.filter(bot=bot, status=Document.Status.ERROR).count() == 1
