from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from chatbase.core import services


class Command(BaseCommand):
    help = "Create an API token for an owner (created if missing) and print it. It is shown only once."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--name", default="cli", help="A label to tell tokens apart.")

    def handle(self, *args, email, name, **options):
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"Not a valid e-mail address: {email!r}") from None
        user, created = services.user_get_or_create(email=email)
        if created:
            self.stderr.write(f"Created owner {user.email} (no password; set one with changepassword).")
        _, raw = services.api_token_create(user=user, name=name)
        self.stdout.write(raw)
