"""Encryption of secrets stored in the database (OAuth tokens).

A database dump or a read-only SQL console must not hand out tokens that write to an
owner's CRM, so they are stored as Fernet tokens. The key is FIELD_ENCRYPTION_KEY or,
when that is empty, derived from SECRET_KEY; the SECRET_KEY_FALLBACKS still decrypt,
so rotating SECRET_KEY keeps stored tokens readable until they are re-saved.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

_PURPOSE = b"chatbase.crm.field-encryption"


def _fernet_key(secret: str) -> bytes:
    # SHA-256 over a purpose label: the same SECRET_KEY signs cookies, and a key used
    # for two things should not be the same bytes.
    return base64.urlsafe_b64encode(hashlib.sha256(_PURPOSE + b"\x00" + secret.encode()).digest())


def _fernet() -> MultiFernet:
    if settings.FIELD_ENCRYPTION_KEY:
        secrets = [settings.FIELD_ENCRYPTION_KEY]
    else:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(_fernet_key(secret)) for secret in secrets if secret])


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    try:
        return _fernet().decrypt(value.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("A stored secret cannot be decrypted with the configured keys.") from exc


class EncryptedTextField(models.TextField):
    """A text field stored encrypted; reads give the plain text back ("" stays "")."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
