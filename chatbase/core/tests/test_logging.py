"""Request ids, redaction and JSON logs."""

import json
import logging

import pytest

from chatbase.core.logging import redact, request_id_var

EMAIL = "priya.raman@example.org"
PHONE = "+91 98400 12345"


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"contact {EMAIL} now", "contact [email] now", EMAIL),
        (f"call {PHONE} today", "call [phone] today", "98400"),
        ("call (044) 4000-7788", "[phone]", "4000-7788"),
        ("Authorization: Bearer cb_abcdefghijklmnopqrstuvwxyz", "Bearer [redacted]", "abcdefghij"),
        ("key sk-proj-abcdefghijklmnop1234", "[redacted-key]", "abcdefghijklmnop"),
        ('{"api_key": "s3cr3tvalue99"}', "api_key", "s3cr3tvalue99"),
        # No false alarms on ordinary numbers, dates and times.
        ("version 2.3.1 costs $49.99 for 3 users", "version 2.3.1 costs $49.99 for 3 users", "[phone]"),
        ("at 2026-11-22 05:25:43,508 order 1234", "at 2026-11-22 05:25:43,508 order 1234", "[phone]"),
    ],
)
def test_redaction(text, kept, gone):
    out = redact(text)
    assert kept in out
    assert gone not in out


def test_json_lines_carry_the_request_id(captured_logs):
    token = request_id_var.set("req-123")
    try:
        logging.getLogger("chatbase.test").warning("hello %s", EMAIL)
    finally:
        request_id_var.reset(token)
    line = json.loads(captured_logs()[1].strip().splitlines()[-1])
    assert line == {**line, "level": "WARNING", "logger": "chatbase.test", "request_id": "req-123"}
    assert line["message"] == "hello [email]"


@pytest.mark.django_db
def test_http_requests_get_an_id_echoed_in_the_response(client):
    assert len(client.get("/health")["X-Request-ID"]) == 32
    assert client.get("/health", headers={"X-Request-ID": "edge-42"})["X-Request-ID"] == "edge-42"
    # A header that is not a plain short id is replaced (it goes into every log line).
    assert client.get("/health", headers={"X-Request-ID": "x" * 65})["X-Request-ID"] != "x" * 65
