"""Domain errors and their one mapping to HTTP and to websocket frames.

Services raise the exceptions below. Three places turn them into what a client
sees, and only these three:

* :func:`drf_exception_handler` for DRF views (``{"detail", "code"}`` JSON),
* :func:`json_error_response` for plain Django views and the 400/403/404/500
  handlers in ``chatbase.urls`` (so unknown URLs answer JSON too),
* :func:`ws_error_frame` for websocket consumers (``{"type": "error", ...}``).
"""

from __future__ import annotations

import logging
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ChatbaseError(Exception):
    """Base of every error a client may be shown."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"
    # The code a websocket client sees; the frame contract has a short list.
    ws_code = "invalid"
    default_detail = "The request is invalid."

    def __init__(self, detail: str | None = None, *, code: str | None = None, extra: dict | None = None):
        self.detail = detail or self.default_detail
        if code:
            self.code = code
        self.extra = extra or {}
        super().__init__(self.detail)


class ValidationFailed(ChatbaseError):
    default_detail = "The request is invalid."


class TooLong(ChatbaseError):
    code = ws_code = "too_long"
    default_detail = "The message is too long."


class NotAuthenticated(ChatbaseError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "not_authenticated"
    default_detail = "Authentication credentials were not provided or are invalid."


class PermissionDenied(ChatbaseError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"
    default_detail = "You do not have permission to do this."


class NotFound(ChatbaseError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_detail = "Not found."


class Conflict(ChatbaseError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(ChatbaseError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"
    ws_code = "too_long"
    default_detail = "The request body is too large."


class UnsupportedMediaType(ChatbaseError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"
    default_detail = "This type of content is not supported."


class RateLimited(ChatbaseError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = ws_code = "rate_limited"
    default_detail = "Too many requests. Try again shortly."

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0, **kwargs):
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(detail, **kwargs)


class Unavailable(ChatbaseError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = ws_code = "unavailable"
    default_detail = "A service this request needs is unavailable. Try again shortly."


def _error_body(detail: str, code: str, extra: dict | None = None) -> dict:
    body = {"detail": str(detail), "code": code}
    if extra:
        body.update(extra)
    return body


def _flatten_validation(detail) -> str:
    """Turn DRF's nested validation errors into one readable sentence."""
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _flatten_validation(value)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten_validation(item) for item in detail)
    return str(detail)


def _first_code(codes) -> str:
    if isinstance(codes, dict):
        for value in codes.values():
            return _first_code(value)
    if isinstance(codes, list) and codes:
        return _first_code(codes[0])
    return str(codes) if codes else "invalid"


def error_payload(exc: BaseException) -> tuple[int, dict, dict]:
    """(status, body, headers) for any exception. The single source of the mapping."""
    headers: dict[str, str] = {}
    if isinstance(exc, ChatbaseError):
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        return exc.status_code, _error_body(exc.detail, exc.code, exc.extra), headers
    if isinstance(exc, drf_exceptions.ValidationError):
        # Field errors stay available, by field, next to the one-line summary.
        return 400, _error_body(_flatten_validation(exc.detail), "invalid", {"errors": exc.detail}), headers
    if isinstance(exc, drf_exceptions.Throttled):
        wait = exc.wait or 1
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return 429, _error_body(exc.detail, "rate_limited"), headers
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return 401, _error_body(exc.detail, _first_code(exc.get_codes())), headers
    if isinstance(exc, drf_exceptions.APIException):
        return exc.status_code, _error_body(_flatten_validation(exc.detail), _first_code(exc.get_codes())), headers
    if isinstance(exc, DjangoValidationError):
        # Model.full_clean() in services: same shape as DRF's field errors.
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return 400, _error_body(_flatten_validation(errors), "invalid", {"errors": errors}), headers
    if isinstance(exc, Http404):
        return 404, _error_body("Not found.", "not_found"), headers
    if isinstance(exc, DjangoPermissionDenied):
        return 403, _error_body("You do not have permission to do this.", "permission_denied"), headers
    if isinstance(exc, RequestDataTooBig):
        return 413, _error_body("The request body is too large.", "too_large"), headers
    if isinstance(exc, SuspiciousOperation):
        return 400, _error_body("The request is invalid.", "invalid"), headers
    return 500, _error_body("Internal server error.", "server_error"), headers


def drf_exception_handler(exc, context):
    status_code, body, headers = error_payload(exc)
    if status_code >= 500 and not isinstance(exc, ChatbaseError):
        view = context.get("view")
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "view", exc_info=exc)
    response = Response(body, status=status_code)
    for name, value in headers.items():
        response[name] = value
    return response


def json_error_response(exc: BaseException) -> JsonResponse:
    status_code, body, headers = error_payload(exc)
    response = JsonResponse(body, status=status_code)
    for name, value in headers.items():
        response[name] = value
    return response


def ws_error_frame(exc: BaseException) -> dict:
    """The websocket ``error`` frame for an exception (unknown errors are ``unavailable``)."""
    if isinstance(exc, ChatbaseError):
        frame = {"type": "error", "code": exc.ws_code, "detail": exc.detail}
        if isinstance(exc, RateLimited):
            frame["retry_after"] = exc.retry_after
        return frame
    logger.exception("Unhandled error in a websocket handler", exc_info=exc)
    return {"type": "error", "code": "unavailable", "detail": Unavailable.default_detail}


# Django's handler400/403/404/500 views for everything outside DRF (unknown URLs included).
def handler400(request, exception=None):
    return json_error_response(exception or SuspiciousOperation())


def handler403(request, exception=None):
    return json_error_response(DjangoPermissionDenied())


def handler404(request, exception=None):
    return json_error_response(Http404())


def handler500(request):
    return json_error_response(RuntimeError())
