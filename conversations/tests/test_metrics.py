"""What a chat turn shows in /metrics."""

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatbase.asgi import application
from chatbase.testing.fake_llm import Script
from conversations.tests.conftest import ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text: str, name: str, **labels) -> float:
    # The exposition format lists labels sorted by name.
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_chat_turn_is_counted(shop_bot, llm):
    before = Client().get("/metrics").content.decode()
    llm.openai.enqueue(Script(failure="server_error"))
    llm.anthropic.enqueue(Script(text="Refunds take 14 days [1].", usage=(50, 7)))
    comm = WebsocketCommunicator(
        application, f"/ws/chat/{shop_bot.public_key}/", headers=[(b"origin", ORIGIN.encode())]
    )
    await comm.connect()
    await comm.receive_json_from(timeout=10)
    during = Client().get("/metrics").content.decode()
    await comm.send_json_to({"type": "message.send", "text": "How long do refunds take?"})
    while (await comm.receive_json_from(timeout=15))["type"] != "answer.done":
        pass
    await comm.disconnect()
    after = Client().get("/metrics").content.decode()

    def grew(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert sample(during, "chatbase_websocket_connections", consumer="ChatConsumer") >= 1
    assert grew("chatbase_llm_errors_total", provider="openai", stage="before_first_token") == 1
    assert grew("chatbase_llm_fallbacks_total", from_provider="openai", stage="before_first_token") == 1
    assert grew("chatbase_llm_answers_total", provider="anthropic", outcome="complete") == 1
    assert grew("chatbase_llm_tokens_total", provider="anthropic", direction="output") == 7
    assert grew("chatbase_llm_first_token_seconds_count", provider="anthropic") == 1
    assert grew("chatbase_retrieval_seconds_count", mode="hybrid") >= 1
    assert grew("chatbase_llm_cost_usd_total", provider="anthropic") > 0
    assert sample(after, "chatbase_websocket_connections", consumer="ChatConsumer") == sample(
        before, "chatbase_websocket_connections", consumer="ChatConsumer"
    )
