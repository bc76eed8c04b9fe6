"""The demo data `seed_demo` creates. Idempotent: every run converges on the same state.

Each app seeds its own part through its services; this module only orders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from bots.demo import demo_bot_seed
from chatbase.core import services as core_services
from geo.services import service_areas_seed_chennai


@dataclass
class DemoResult:
    api_token: str
    admin_email: str
    admin_password: str
    admin_password_changed: bool
    owner_email: str
    bot_id: int
    bot_public_key: str


def demo_seed() -> DemoResult:
    with transaction.atomic():
        owner, _ = core_services.user_get_or_create(email=settings.DEMO_OWNER_EMAIL)
        admin, created = core_services.user_get_or_create(
            email=settings.DEMO_ADMIN_EMAIL, password=settings.DEMO_ADMIN_PASSWORD, is_staff=True
        )
        if created:
            core_services.user_make_superuser(user=admin)
        _, raw_token = core_services.api_token_ensure_derived(user=owner, purpose="demo")
        # The migration shipped them; a demo database that lost some gets them back.
        service_areas_seed_chennai()
    # Outside the transaction: the documents' ingestion runs after their commit.
    bot = demo_bot_seed(owner=owner)
    return DemoResult(
        api_token=raw_token,
        admin_email=admin.email,
        admin_password=settings.DEMO_ADMIN_PASSWORD,
        # Someone changed the seeded password: we never reset it, but we must not
        # print a password that no longer works without saying so.
        admin_password_changed=not admin.check_password(settings.DEMO_ADMIN_PASSWORD),
        owner_email=owner.email,
        bot_id=bot.pk,
        bot_public_key=bot.public_key,
    )
