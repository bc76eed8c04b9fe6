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
