import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from bots.demo import EVAL_FILE, demo_bot_seed
from bots.tests.factories import BotFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_bot(owner, media_root, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        bot = demo_bot_seed(owner=owner)
    bot.refresh_from_db()
    return bot


def test_demo_documents_are_ingested_and_the_labelled_questions_are_answered(demo_bot, capsys):
    assert demo_bot.documents.filter(status="ready").count() == 5
    call_command("evaluate_retrieval", str(demo_bot.pk), str(EVAL_FILE), "--k", "3")
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert set(rows) == {"hybrid", "vector", "text"}
    recall, mrr = (float(x) for x in rows["hybrid"])
    # The demo set is small and labelled for this bot: hybrid retrieval must get
    # nearly every question right, and never do worse than vectors alone.
    assert recall >= 0.9
    assert mrr >= float(rows["vector"][1])


def test_bad_inputs_are_command_errors(demo_bot, tmp_path):
    with pytest.raises(CommandError, match="No bot"):
        call_command("evaluate_retrieval", "999999", str(EVAL_FILE))
    with pytest.raises(CommandError, match="No such file"):
        call_command("evaluate_retrieval", str(demo_bot.pk), str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(CommandError, match=r"bad\.jsonl:1"):
        call_command("evaluate_retrieval", str(demo_bot.pk), str(bad))
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"question": "x", "expected": "nope.pdf"}) + "\n")
    with pytest.raises(CommandError, match=r"nope\.pdf"):
        call_command("evaluate_retrieval", str(demo_bot.pk), str(unknown))
    with pytest.raises(CommandError, match="--modes"):
        call_command("evaluate_retrieval", str(BotFactory().pk), str(EVAL_FILE), "--modes", "magic")


def test_demo_seed_is_idempotent(demo_bot, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        again = demo_bot_seed(owner=owner)
    again.refresh_from_db()
    assert demo_bot.chunk_count > 0
    assert again.pk == demo_bot.pk
    assert again.documents.count() == 5
    assert again.chunk_count == demo_bot.chunk_count
