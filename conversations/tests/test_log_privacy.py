"""A visitor's contact details never reach the logs in clear."""

import json
import logging

import pytest
from channels.testing import WebsocketCommunicator

from chatbase.asgi import application
from conversations.tests.conftest import ORIGIN

EMAIL = "priya.raman@example.org"
PHONE = "+91 98400 12345"


@pytest.mark.django_db(transaction=True)
async def test_a_chat_message_with_contact_details_leaves_no_trace_in_the_logs(
    shop_bot, captured_logs, settings, request
):
    # DEBUG makes Django log every SQL statement with its parameters: the message text
    # really goes through the logging system, which must redact it.
    settings.DEBUG = True
    sql_logger = logging.getLogger("django.db.backends")
    sql_logger.setLevel(logging.DEBUG)
    request.addfinalizer(lambda: sql_logger.setLevel(logging.INFO))
    comm = WebsocketCommunicator(
        application, f"/ws/chat/{shop_bot.public_key}/", headers=[(b"origin", ORIGIN.encode())]
    )
    await comm.connect()
    await comm.receive_json_from(timeout=10)
    await comm.send_json_to({"type": "message.send", "text": f"I want a refund, mail {EMAIL} or call {PHONE}"})
    while (await comm.receive_json_from(timeout=15))["type"] not in ("answer.done", "error"):
        pass
    await comm.disconnect()
    plain, structured = captured_logs()
    assert "[email]" in plain and "[phone]" in plain, "the text was expected to reach the logs (SQL) and be redacted"
    for output in (plain, structured):
        assert EMAIL not in output and "priya.raman" not in output
        assert "98400" not in output and "12345" not in output
    # Every line of the socket carries the connection's request id.
    lines = [json.loads(line) for line in structured.splitlines() if "conversations_message" in line]
    assert lines and {line["request_id"] for line in lines} == {lines[0]["request_id"]}
    assert lines[0]["request_id"].startswith("ws-")
