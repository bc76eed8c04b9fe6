"""`Authorization: Bearer <token>` for the owner API."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from chatbase.core import selectors, services


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            raw = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = selectors.api_token_get_active(raw=raw)
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        services.api_token_touch(token=token)
        return token.user, token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


def login_username(request, credentials: dict | None = None) -> str | None:
    """The user name django-axes counts failures against, whichever form logged in.

    The admin form posts `username`, allauth posts `login`, and backends are called
    with `email` (our USERNAME_FIELD); lower-cased so case variants share a count.
    """
    sources = [credentials or {}, getattr(request, "POST", {}) or {}]
    for source in sources:
        for field in ("username", "email", "login"):
            value = source.get(field)
            if value:
                return str(value).strip().lower()
    return None
