from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatbase import embedded_db


class Command(BaseCommand):
    help = "Show or stop the embedded PostgreSQL server (used when DATABASE_URL is not set)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, action, **options):
        if not settings.EMBEDDED_DATABASE:
            raise CommandError("DATABASE_URL is set: there is no embedded database.")
        if action == "stop":
            stopped = embedded_db.stop(settings.VAR_DIR)
            self.stdout.write("stopped" if stopped else "not running")
        else:
            db = settings.DATABASES["default"]
            data = settings.VAR_DIR / "pg"
            self.stdout.write(f"running: socket dir {db['HOST']}, database {db['NAME']}, data {data}")
