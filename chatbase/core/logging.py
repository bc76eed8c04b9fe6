"""Request ids on every log line, redaction of personal data and secrets, JSON logs.

A request id is set per HTTP request (`RequestIdMiddleware`, honouring a sane
incoming `X-Request-ID`), per websocket connection (`JsonConsumer`), and carried to
Celery tasks in a message header, so one id ties a visitor's action to everything
it caused. It lives in a context variable, which asgiref copies into the threads
that run sync code.

Redaction happens in the formatter, on the final text (traceback included), so no
handler can write an e-mail address, a phone number, a bearer token or an API key.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A run of 8-15 digits, optionally with +, spaces, dots, dashes or brackets between.
_PHONE = re.compile(r"(?<![\w.:-])\+?\(?\d(?:[\s().-]{0,2}\d){7,14}(?![\w:])")
# ...but not a date or a time, which look the same to that pattern.
_DATE_OR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}")


def _phone(match: re.Match) -> str:
    return match.group(0) if _DATE_OR_TIME.search(match.group(0)) else "[phone]"


_SECRETS = [
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    # Our API tokens, OpenAI/Anthropic keys, HubSpot private-app tokens, generic key=value.
    (re.compile(r"\b(cb|sk|sk-ant|pat|rk)[-_][A-Za-z0-9_-]{12,}"), "[redacted-key]"),
    (
        re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|secret|password|token)(['\"]?\s*[=:]\s*['\"]?)[^\s'\",}]{6,}"),
        r"\1\2[redacted]",
    ),
]


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str:
    """An incoming id is kept only if it is short and plain (it goes into every log line)."""
    return value if value and _SAFE_ID.match(value) else new_request_id()


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(_phone, text)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    """The message and any traceback are redacted; the line's own fields (time, level) are not."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware:
    """Sets the request id for the request's code and logs, and returns it as X-Request-ID."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _start(self, request) -> None:
        request.request_id = clean_request_id(request.headers.get("X-Request-ID"))
        # Not reset when the view returns: a streamed response (SSE) logs after that,
        # and every request sets its own id before anything else runs.
        request_id_var.set(request.request_id)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        self._start(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    async def __acall__(self, request):
        self._start(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
