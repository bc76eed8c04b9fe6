import json

from django.core.management.base import BaseCommand

from chatbase.core.demo import demo_seed


class Command(BaseCommand):
    help = "Create (or bring up to date) the demo owner, staff login, bot, templates, areas and documents."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="Print only the demo credentials as one JSON object on stdout."
        )

    def handle(self, *args, **options):
        result = demo_seed()
        if result.admin_password_changed:
            self.stderr.write(f"Note: the password of {result.admin_email} was changed after seeding; it is not reset.")
        payload = {
            "api_token": result.api_token,
            "bot_id": result.bot_id,
            "bot_public_key": result.bot_public_key,
            "admin_email": result.admin_email,
            "admin_password": result.admin_password,
        }
        if options["json"]:
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(self.style.SUCCESS("Demo data is ready."))
        for key, value in payload.items():
            self.stdout.write(f"  {key}: {value}")
