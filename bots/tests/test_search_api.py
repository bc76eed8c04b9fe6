"""Search over real embeddings (all-MiniLM-L6-v2) and the real database."""

import pytest

from bots.services.documents import document_create
from bots.tests.factories import BotFactory

pytestmark = pytest.mark.django_db

DISTRACTORS = [
    "Our office is closed on public holidays and reopens the next working day.",
    "Shipping within the city takes two business days; other regions take five.",
    "You can pay by card, bank transfer or UPI. Cash is not accepted.",
    "The mobile app shows your order history and lets you download invoices.",
    "Gift cards are valid for twelve months from the date of purchase.",
    "Our newsletter comes out every other Friday with product news.",
]
FACT = "The spare battery for the Zephyr X2 drone is part number ZB-4471 and costs 89 euros."


@pytest.fixture
def bot_with_knowledge(owner, media_root, django_capture_on_commit_callbacks):
    bot = BotFactory(owner=owner)
    with django_capture_on_commit_callbacks(execute=True):
        for i, text in enumerate(DISTRACTORS):
            document_create(bot=bot, title=f"Policy {i}", text=text)
        document_create(bot=bot, title="Drone parts", text=FACT)
    bot.refresh_from_db()
    return bot


def test_a_unique_fact_is_the_top_hit(owner_client, bot_with_knowledge, owner):
    owner_client.force_authenticate(owner)
    response = owner_client.post(
        f"/api/v1/bots/{bot_with_knowledge.pk}/search/",
        {"query": "how much is a replacement battery for my drone?", "k": 3},
        format="json",
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    top = results[0]
    assert top["document_title"] == "Drone parts"
    assert "ZB-4471" in top["text"]
    assert set(top) >= {"chunk_id", "document_id", "document_title", "text", "score"}
    assert top["score"] >= results[1]["score"]


def test_exact_codes_are_found_by_the_full_text_half(owner_client, bot_with_knowledge, owner):
    owner_client.force_authenticate(owner)
    response = owner_client.post(
        f"/api/v1/bots/{bot_with_knowledge.pk}/search/", {"query": "ZB-4471", "k": 1, "mode": "text"}, format="json"
    )
    assert response.json()["results"][0]["document_title"] == "Drone parts"


def test_search_never_returns_another_bots_chunks(owner_client, owner, media_root, django_capture_on_commit_callbacks):
    mine = BotFactory(owner=owner)
    with django_capture_on_commit_callbacks(execute=True):
        document_create(bot=mine, title="Mine", text="Our cafe serves filter coffee and idli.")
        document_create(bot=BotFactory(), title="Theirs", text=FACT)
    owner_client.force_authenticate(owner)
    results = owner_client.post(
        f"/api/v1/bots/{mine.pk}/search/", {"query": "drone battery part number", "k": 5}, format="json"
    ).json()["results"]
    assert [r["document_title"] for r in results] == ["Mine"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"query": ""},
        {"query": "   "},
        {"query": "x", "k": 0},
        {"query": "x", "k": 51},
        {"query": "x", "mode": "magic"},
    ],
)
def test_bad_search_input_is_400(owner_client, owner, payload):
    bot = BotFactory(owner=owner)
    owner_client.force_authenticate(owner)
    response = owner_client.post(f"/api/v1/bots/{bot.pk}/search/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
