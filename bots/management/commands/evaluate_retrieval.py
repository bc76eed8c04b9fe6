from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bots.evaluation import evaluate, load_cases
from bots.models import Bot
from bots.selectors import SEARCH_MODES
from chatbase.core.errors import ValidationFailed


class Command(BaseCommand):
    help = "Print recall@k and MRR of retrieval for labelled question -> expected-document pairs (JSON lines)."

    def add_arguments(self, parser):
        parser.add_argument("bot_id", type=int)
        parser.add_argument("file", type=Path, help='JSON lines: {"question": ..., "expected": filename|title|id}')
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--modes", default=",".join(SEARCH_MODES), help="comma-separated: hybrid,vector,text")
        parser.add_argument("--show-misses", action="store_true")

    def handle(self, *args, bot_id, file, k, modes, show_misses, **options):
        bot = Bot.objects.filter(pk=bot_id).first()
        if bot is None:
            raise CommandError(f"No bot with id {bot_id}.")
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        wanted = [m.strip() for m in modes.split(",") if m.strip()]
        if not wanted or set(wanted) - set(SEARCH_MODES):
            raise CommandError(f"--modes must be among {', '.join(SEARCH_MODES)}.")
        if k < 1:
            raise CommandError("--k must be at least 1.")
        try:
            cases = load_cases(file)
            reports = [evaluate(bot=bot, cases=cases, k=k, mode=mode) for mode in wanted]
        except ValidationFailed as exc:
            raise CommandError(exc.detail) from exc

        self.stdout.write(f"{bot.name}: {len(cases)} questions, {bot.chunk_count} chunks, k={k}")
        self.stdout.write(f"{'mode':<8} {'recall@' + str(k):>9} {'MRR':>6}")
        for report in reports:
            self.stdout.write(f"{report.mode:<8} {report.recall:>9.3f} {report.mrr:>6.3f}")
        if show_misses:
            for report in reports:
                for question, expected, got in report.misses:
                    self.stdout.write(f"  [{report.mode}] miss: {question!r} expected {expected}, got {got}")
