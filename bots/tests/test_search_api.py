"""Search over real embeddings (all-MiniLM-L6-v2) and the real database."""

import time

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


# --- searches started ahead (the chat socket starts one as a message arrives) -------------
QUESTION = "how much is a replacement battery for my drone?"


@pytest.fixture
def search_calls(monkeypatch):
    from bots import selectors

    calls = []
    real = selectors._chunk_search

    def counting(**kwargs):
        calls.append(kwargs["query"])
        return real(**kwargs)

    monkeypatch.setattr(selectors, "_chunk_search", counting)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_prefetched_search_runs_once_and_is_taken_once(bot_with_knowledge, search_calls):
    from bots.selectors import chunk_search, chunk_search_prefetch

    chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)
    chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)  # already started: not twice
    results = chunk_search(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert search_calls == [QUESTION]
    assert results[0].document_title == "Drone parts"
    again = chunk_search(bot=bot_with_knowledge, query=QUESTION, k=3)  # taken: searched afresh
    assert search_calls == [QUESTION, QUESTION]
    assert [r.chunk_id for r in again] == [r.chunk_id for r in results]


@pytest.mark.django_db(transaction=True)
def test_a_prefetch_for_other_arguments_is_not_used(bot_with_knowledge, search_calls):
    from bots.selectors import chunk_search, chunk_search_prefetch

    chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert len(chunk_search(bot=bot_with_knowledge, query=QUESTION, k=2)) == 2
    assert search_calls == [QUESTION, QUESTION]
    # The bot's chunk count picks the plan: a bot that grew since is searched afresh.
    bot_with_knowledge.chunk_count += 1
    chunk_search(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert search_calls == [QUESTION, QUESTION, QUESTION]


@pytest.mark.django_db(transaction=True)
def test_a_failed_or_stale_prefetch_is_searched_again(bot_with_knowledge, search_calls, monkeypatch):
    from bots import selectors

    real = selectors._chunk_search
    failures = [RuntimeError("connection lost")]

    def flaky(**kwargs):
        if failures:
            search_calls.append("failed")
            raise failures.pop()
        return real(**kwargs)

    monkeypatch.setattr(selectors, "_chunk_search", flaky)
    selectors.chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert selectors.chunk_search(bot=bot_with_knowledge, query=QUESTION, k=3)[0].document_title == "Drone parts"
    assert search_calls == ["failed", QUESTION]

    monkeypatch.setattr(selectors, "PREFETCH_KEEP_SECONDS", 0)
    selectors.chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)
    deadline = time.monotonic() + 10
    while search_calls.count(QUESTION) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the early search ran...
    selectors.chunk_search(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert search_calls.count(QUESTION) == 3  # ...but was too old to be used


@pytest.mark.django_db(transaction=True)
async def test_async_search_takes_the_prefetch_or_searches_on_its_own_threads(bot_with_knowledge, search_calls):
    from bots.selectors import chunk_search_async, chunk_search_prefetch

    chunk_search_prefetch(bot=bot_with_knowledge, query=QUESTION, k=3)
    prefetched = await chunk_search_async(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert search_calls == [QUESTION] and prefetched[0].document_title == "Drone parts"
    fresh = await chunk_search_async(bot=bot_with_knowledge, query=QUESTION, k=3)
    assert search_calls == [QUESTION, QUESTION]
    assert [r.chunk_id for r in fresh] == [r.chunk_id for r in prefetched]
