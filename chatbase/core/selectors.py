from __future__ import annotations

from django.db.models import QuerySet

from chatbase.core.errors import NotFound
from chatbase.core.models import ApiToken, User, hash_token


def api_token_get_active(*, raw: str) -> ApiToken | None:
    return ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw), revoked_at__isnull=True).first()


def user_get_by_email(*, email: str) -> User | None:
    return User.objects.filter(email__iexact=email.strip()).first()


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at", "-id")


def api_token_get_for_user(*, user: User, token_id: int) -> ApiToken:
    token = api_token_list(user=user).filter(pk=token_id).first()
    if token is None:
        raise NotFound("No such token.")
    return token
