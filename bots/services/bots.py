"""Writes of bots."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from bots.configuration import normalise_origin, validate_configuration, validate_theme
from bots.models import Bot, PromptTemplate, new_identity_secret, new_public_key
from chatbase.core.errors import ValidationFailed
from chatbase.core.models import User

MAX_SUGGESTIONS = 8
MAX_ORIGINS = 50

# Fields an owner may set, with the cleaner for each (None: the serializer's type is enough).
EDITABLE = (
    "name",
    "description",
    "welcome_message",
    "template",
    "provider",
    "model",
    "temperature",
    "status",
    "allowed_origins",
    "suggestions",
    "theme",
    "configuration",
)


def bot_field_clean(field: str, value: Any) -> Any:
    """Normalise and validate one owner-editable field; raises ValidationFailed."""
    if field == "allowed_origins":
        if len(value) > MAX_ORIGINS:
            raise ValidationFailed(f"allowed_origins: at most {MAX_ORIGINS} origins.")
        return sorted({normalise_origin(origin) for origin in value})
    if field == "suggestions":
        cleaned = [s.strip() for s in value if s.strip()]
        if len(cleaned) > MAX_SUGGESTIONS:
            raise ValidationFailed(f"suggestions: at most {MAX_SUGGESTIONS}.")
        return cleaned
    if field == "theme":
        return validate_theme(value)
    if field == "configuration":
        return validate_configuration(value)
    if field == "template" and value is not None and not isinstance(value, PromptTemplate):
        raise ValidationFailed("template: unknown template.")
    return value


def _forget_widget_config(public_key: str) -> None:
    # The widget's cached config must not outlive a change (or the old key after a rotation).
    from bots.widget import widget_config_forget

    transaction.on_commit(lambda: widget_config_forget(public_key=public_key))


@transaction.atomic
def bot_create(*, owner: User, name: str, **fields: Any) -> Bot:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValidationFailed(f"Unknown bot field(s): {', '.join(sorted(unknown))}.")
    bot = Bot(owner=owner, name=name, **{field: bot_field_clean(field, value) for field, value in fields.items()})
    bot.full_clean(exclude=["owner", "template"])
    bot.save()
    return bot


@transaction.atomic
def bot_update(*, bot: Bot, **fields: Any) -> Bot:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValidationFailed(f"Unknown bot field(s): {', '.join(sorted(unknown))}.")
    if not fields:
        return bot
    for field, value in fields.items():
        setattr(bot, field, bot_field_clean(field, value))
    bot.full_clean(exclude=["owner", "template"])
    bot.save(update_fields=[*fields, "updated_at"])
    _forget_widget_config(bot.public_key)
    return bot


@transaction.atomic
def bot_rotate_keys(*, bot: Bot) -> Bot:
    """New public key and identity secret: the old embed code and user hashes stop working."""
    _forget_widget_config(bot.public_key)
    bot.public_key = new_public_key()
    bot.identity_secret = new_identity_secret()
    bot.save(update_fields=["public_key", "identity_secret", "updated_at"])
    return bot


@transaction.atomic
def bot_delete(*, bot: Bot) -> None:
    # Documents own stored files; their service removes the files after commit.
    from bots.services.documents import document_delete

    for document in bot.documents.all():
        document_delete(document=document)
    _forget_widget_config(bot.public_key)
    bot.delete()
