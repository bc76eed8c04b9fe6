"""The offline extractive answerer: relevant sentences, quoted and cited, or a plain "not found"."""

from __future__ import annotations

import pytest

from bots.llm import ChatMessage, ChatRequest, ChatResult, Passage, TextDelta, stream_chat
from bots.llm.providers.extractive import (
    CONTINUATION_INTRO,
    CONTINUATION_NOT_FOUND,
    INTRO,
    NOT_FOUND,
    compose_answer,
    content_stems,
    rank_sentences,
    split_sentences,
    stem,
)


def passage(title: str, text: str, number: int = 1) -> Passage:
    return Passage(chunk_id=number, document_id=number, document_title=title, url="", text=text, score=1.0 / number)


SHIPPING = passage(
    "Shipping",
    "We ship to every country in the EU. Standard shipping takes 3 to 5 working days. "
    "Express delivery arrives the next day if you order before noon.",
    1,
)
RETURNS = passage(
    "Returns",
    "You can return unused items within 30 days. Refunds are issued within 14 days of receiving the returned item. "
    "Opened software cannot be returned.",
    2,
)
GIFT_CARDS = passage(
    "Gift cards",
    "A card can be bought as a gift for any amount at the till.\n"
    "Gift cards are valid for two years and can be used online.",
    3,
)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["refund", "refunds", "refunded", "refunding"], "refund"),
        (["ship", "ships", "shipped", "shipping"], "ship"),
        (["policy", "policies"], "polic"),
        (["deliver", "delivery", "delivered", "deliveries"], "deliver"),
        (["cancel", "cancelled", "cancellation", "cancelling"], "cancel"),
        (["box", "boxes"], "box"),
        (["hour", "hours", "Hour's"], "hour"),
        (["open", "opened", "opening"], "open"),
    ],
)
def test_the_light_stemmer_folds_word_families(words, expected):
    assert {stem(word) for word in words} == {expected}


def test_stems_never_collapse_short_or_unrelated_words():
    assert stem("bus") == "bus"
    assert stem("status") == "status"
    assert stem("analysis") == "analysis"
    assert stem("red") == "red"
    assert stem("need") == "need"


def test_content_stems_drop_stopwords_and_keep_numbers():
    assert content_stems("How long do refunds take in 2024?") == ["long", "refund", "2024"]
    assert content_stems("What is it?") == []
    assert content_stems("Don\u2019t you ship?") == ["ship"]


def test_sentences_are_split_on_punctuation_lines_and_bullets():
    text = "# Returns\n- Items must be unused. Refunds take 14 days!\n2. Keep the receipt?  Yes.\n\nDone"
    assert split_sentences(text) == [
        "Returns",
        "Items must be unused.",
        "Refunds take 14 days!",
        "Keep the receipt?",
        "Yes.",
        "Done",
    ]


def test_the_answer_quotes_the_relevant_sentence_and_cites_its_passage():
    answer = compose_answer("How long do refunds take?", [SHIPPING, RETURNS], max_sentences=4)

    assert answer.startswith(INTRO + "\n\n")
    assert '- "Refunds are issued within 14 days of receiving the returned item." [2]' in answer
    assert "ship" not in answer.lower()


def test_citations_follow_the_passage_order_with_one_line_per_passage():
    answer = compose_answer(
        "How many days does shipping take, and when are refunds issued?", [SHIPPING, RETURNS], max_sentences=4
    )

    lines = answer.split("\n")
    assert lines[0] == INTRO
    quoted = [line for line in lines if line.startswith("- ")]
    assert quoted[0].startswith('- "Standard shipping takes 3 to 5 working days.')
    assert quoted[0].endswith("[1]")
    assert quoted[1] == '- "Refunds are issued within 14 days of receiving the returned item." [2]'


def test_a_phrase_in_the_question_outranks_the_same_words_scattered():
    ranked = rank_sentences("Are gift cards valid online?", [GIFT_CARDS])
    assert ranked[0].text == "Gift cards are valid for two years and can be used online."


def test_unrelated_sentences_do_not_pad_the_answer():
    answer = compose_answer("Can I return opened software?", [SHIPPING, RETURNS, GIFT_CARDS], max_sentences=4)
    assert "Opened software cannot be returned." in answer
    assert "[1]" not in answer
    assert "[3]" not in answer


def test_max_sentences_is_respected():
    ranked = rank_sentences("return refund returned items days", [RETURNS], limit=4)
    assert len(ranked) >= 2
    answer = compose_answer("return refund returned items days", [RETURNS], max_sentences=1)
    assert answer.count('"') == 2


@pytest.mark.parametrize(
    "question",
    [
        "What is the capital of France?",
        "What is it?",
        "",
        "hello!",
        # One word in common, but not what the question is about.
        "What are your opening hours?",
        "Do you deliver to Germany?",
    ],
)
def test_nothing_relevant_means_a_plain_not_found(question):
    assert compose_answer(question, [SHIPPING, RETURNS, GIFT_CARDS], max_sentences=4) == NOT_FOUND


def test_a_question_about_what_the_passages_cover_is_answered_even_with_extra_words():
    answer = compose_answer("Is there express delivery to my door?", [SHIPPING, RETURNS], max_sentences=4)
    assert answer == INTRO + '\n\n- "Express delivery arrives the next day if you order before noon." [1]'


def test_no_passages_means_not_found():
    assert compose_answer("How long do refunds take?", [], max_sentences=4) == NOT_FOUND


def test_a_continuation_says_it_is_adding_quotes():
    assert compose_answer("refunds", [RETURNS], max_sentences=4, continuing=True).startswith(CONTINUATION_INTRO)
    assert compose_answer("France", [RETURNS], max_sentences=4, continuing=True) == CONTINUATION_NOT_FOUND


def test_very_long_sentences_are_shortened():
    long_text = "Refunds " + "and more words " * 60 + "end."
    answer = compose_answer("refunds", [passage("Long", long_text)], max_sentences=4)
    quote = answer.split("\n")[-1]
    assert quote.endswith('…" [1]')
    assert len(quote) < 450


async def test_it_streams_its_answer_in_small_deltas(settings):
    settings.LLM_PROVIDERS = ["extractive"]
    chat_request = ChatRequest(
        system_prompt="",
        messages=[
            ChatMessage(role="user", content="Do you ship to Spain?"),
            ChatMessage(role="assistant", content="Yes, we do."),
            ChatMessage(role="user", content="How long do refunds take?"),
        ],
        passages=[SHIPPING, RETURNS],
    )

    events = [event async for event in stream_chat(chat_request)]

    result = events[-1]
    assert isinstance(result, ChatResult)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(texts) > 10
    assert "".join(texts) == result.text
    # It answers the last question, not an earlier one.
    assert "Refunds are issued within 14 days" in result.text
    assert "Standard shipping" not in result.text
    assert result.providers == ["extractive"]
