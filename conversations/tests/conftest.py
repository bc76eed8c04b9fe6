import asyncio

import pytest

from bots.llm.clients import aclose_clients
from bots.services.documents import document_create
from bots.tests.factories import BotFactory

ORIGIN = "https://shop.example.com"
REFUNDS = "Refunds are paid within 14 days of receiving the returned item. Items must be unused."
SHIPPING = "Orders ship within two working days. Express delivery costs 9 euros."


@pytest.fixture
def shop_bot(transactional_db, media_root):
    """A bot with two small documents, ingested (autocommit: on_commit runs at once)."""
    bot = BotFactory(name="Shop helper", allowed_origins=[ORIGIN], welcome_message="Hello!", suggestions=["Refunds?"])
    document_create(bot=bot, title="Returns policy", text=REFUNDS)
    document_create(bot=bot, title="Shipping", text=SHIPPING)
    bot.refresh_from_db()
    assert bot.chunk_count == 2
    return bot


@pytest.fixture
async def llm(fake_llm):
    """The fake model server; the SDK clients of this test's event loop are closed after."""
    yield fake_llm
    await aclose_clients()


@pytest.fixture(autouse=True)
async def every_prepare_slot_given_back():
    """Whatever a test did (answers refused, failed, cut off, sockets closed), no
    preparation slot (conversations/admission.py) stays taken on its loop."""
    from conversations import admission

    yield
    known = admission._semaphores.get(asyncio.get_running_loop())
    if known is None:
        return
    limit, semaphore = known
    for _ in range(100):  # answer tasks may still be finishing after their socket closed
        if semaphore._value == limit:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{limit - semaphore._value} preparation slot(s) never given back")
