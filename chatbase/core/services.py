"""Writes for owners and API tokens."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbase.core.models import ApiToken, User, hash_token
from chatbase.core.selectors import user_get_by_email

TOKEN_PREFIX = "cb_"  # noqa: S105 - a public marker, not a secret
# last_used_at is informational; writing it on every request would turn each API
# read into a write.
_TOUCH_INTERVAL = timedelta(minutes=1)


@transaction.atomic
def user_get_or_create(*, email: str, password: str | None = None, is_staff: bool = False) -> tuple[User, bool]:
    user = user_get_by_email(email=email)
    if user is not None:
        return user, False
    user = User.objects.create_user(email=email, password=password, is_staff=is_staff)
    return user, True


@transaction.atomic
def user_make_superuser(*, user: User) -> None:
    user.is_staff = True
    user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])


def _store_token(*, user: User, raw: str, name: str) -> ApiToken:
    return ApiToken.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw))


@transaction.atomic
def api_token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return _store_token(user=user, raw=raw, name=name), raw


@transaction.atomic
def api_token_ensure_derived(*, user: User, purpose: str) -> tuple[ApiToken, str]:
    """A token derived from SECRET_KEY, so the same raw value can be shown again.

    Used only by ``seed_demo --json``: it must print a still-valid token on every
    run without piling up a new token per run, and only hashes are stored.
    """
    digest = hmac.new(settings.SECRET_KEY.encode(), f"api-token:{purpose}:{user.pk}".encode(), "sha256")
    raw = TOKEN_PREFIX + digest.hexdigest()[:43]
    token = ApiToken.objects.filter(key_hash=hash_token(raw)).first()
    if token is None:
        token = _store_token(user=user, raw=raw, name=purpose)
    elif token.revoked_at is not None:
        token.revoked_at = None
        token.save(update_fields=["revoked_at"])
    return token, raw


def api_token_touch(*, token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at and now - token.last_used_at < _TOUCH_INTERVAL:
        return
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


@transaction.atomic
def api_token_revoke(*, token: ApiToken) -> None:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
