"""python manage.py ingest BOT_ID PATH... : add files to a bot and ingest them now, with a progress bar."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.core.management.base import BaseCommand, CommandError

from bots.models import Bot, Document
from bots.services.documents import document_create, document_ingest
from chatbase.core.errors import ChatbaseError


class ProgressBar:
    """A one-line text bar redrawn in place with carriage returns (as tqdm does)."""

    WIDTH = 30

    def __init__(self, out, label: str):
        self.out = out
        self.label = label
        self.percent = -1

    def update(self, percent: int) -> None:
        if percent == self.percent:
            return
        self.percent = percent
        filled = self.WIDTH * percent // 100
        self.out.write(f"\r[{'#' * filled}{'-' * (self.WIDTH - filled)}] {percent:3d}% {self.label}", ending="")
        self.out.flush()

    def finish(self, outcome: str) -> None:
        self.out.write(f"\r{' ' * (self.WIDTH + 8 + len(self.label))}\r{self.label}: {outcome}")
        self.out.flush()


class Command(BaseCommand):
    help = "Add files (PDF, TXT, MD, HTML) to a bot and ingest them synchronously, showing progress."

    def add_arguments(self, parser):
        parser.add_argument("bot_id", type=int, help="The id of the bot that gets the documents.")
        parser.add_argument("paths", nargs="+", help="Files to ingest.")

    def handle(self, *args, bot_id: int, paths: list[str], **options):
        bot = Bot.objects.filter(pk=bot_id).first()
        if bot is None:
            raise CommandError(f"There is no bot with id {bot_id}.")
        files = [Path(p) for p in paths]
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}")
        not_files = [str(p) for p in files if not p.is_file()]
        if not_files:
            raise CommandError(f"Not a file: {', '.join(not_files)}")

        failures: list[tuple[Path, str]] = []
        chunks = 0
        for index, path in enumerate(files, start=1):
            bar = ProgressBar(self.stderr, f"[{index}/{len(files)}] {path.name}")
            bar.update(0)
            try:
                document = self._ingest(bot, path, bar)
            except ChatbaseError as exc:
                bar.finish(f"refused: {exc.detail}")
                failures.append((path, exc.detail))
                continue
            except Exception as exc:
                bar.finish(f"failed: {type(exc).__name__}: {exc}")
                failures.append((path, f"{type(exc).__name__}: {exc}"))
                continue
            if document.status == Document.Status.READY:
                chunks += document.chunk_count
                bar.finish(f"ready, {document.chunk_count} chunks (document {document.pk})")
            else:
                bar.finish(f"error: {document.error}")
                failures.append((path, document.error))

        ok = len(files) - len(failures)
        self.stdout.write(f"Ingested {ok} of {len(files)} files into bot {bot.pk} ({bot.name}): {chunks} chunks.")
        for path, reason in failures:
            self.stderr.write(f"  {path}: {reason}")
        if failures:
            raise CommandError(f"{len(failures)} of {len(files)} files could not be ingested.")

    def _ingest(self, bot: Bot, path: Path, bar: ProgressBar) -> Document:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as fh:
            upload = UploadedFile(fh, name=path.name, content_type=content_type, size=path.stat().st_size)
            document = document_create(bot=bot, upload=upload, schedule_ingest=False)
        return document_ingest(document=document, progress_callback=bar.update)
