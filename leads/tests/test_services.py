import pytest
from django.db import IntegrityError, transaction

from bots.tests.factories import BotFactory
from chatbase.core.errors import Conflict, ValidationFailed
from leads import services
from leads.models import Lead, LeadScoreEvent
from leads.tests.factories import ConversationFactory, LeadFactory

pytestmark = pytest.mark.django_db


def capture(bot, **kwargs):
    kwargs.setdefault("source", Lead.Source.FORM)
    return services.lead_capture(bot=bot, **kwargs)


def test_capture_normalises_and_upserts_by_email_case_insensitively(bot, conversation):
    lead = capture(bot, conversation=conversation, email=" Priya@Example.COM ", phone="098765 43210", name="Priya")
    assert (lead.email, lead.phone, lead.name) == ("priya@example.com", "+919876543210", "Priya")
    again = capture(bot, email="PRIYA@example.com", company="Acme Pvt Ltd", phone="+91 98765 11111")
    assert again.pk == lead.pk
    lead.refresh_from_db()
    # Non-empty details are merged in; a corrected phone replaces the old one; the name stays.
    assert (lead.company, lead.phone, lead.name) == ("Acme Pvt Ltd", "+919876511111", "Priya")
    assert list(lead.conversations.all()) == [conversation]
    assert Lead.objects.count() == 1


def test_same_email_on_another_bot_is_another_lead(bot):
    first = capture(bot, email="a@example.com")
    second = capture(BotFactory(), email="a@example.com")
    assert first.pk != second.pk


def test_database_refuses_a_duplicate_email_per_bot_whatever_the_case(bot):
    LeadFactory(bot=bot, email="dup@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadFactory(bot=bot, email="DUP@example.com")
    # Leads without an e-mail are not constrained.
    LeadFactory(bot=bot, email="")
    LeadFactory(bot=bot, email="")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"phone": "12345"}, "phone"),
        ({"phone": "call me"}, "phone"),
        ({"email": 42}, "email"),
        ({"name": "x" * 201}, "name"),
        ({}, "at least one"),
        ({"email": "a@example.com", "consent": "yes"}, "consent"),
    ],
)
def test_capture_refuses_bad_input(bot, fields, message):
    with pytest.raises(ValidationFailed) as error:
        capture(bot, **fields)
    assert message in error.value.detail
    assert Lead.objects.count() == 0


def test_phone_region_comes_from_the_setting(bot, settings):
    settings.LEAD_DEFAULT_PHONE_REGION = "GB"
    assert capture(bot, phone="020 7946 0958").phone == "+442079460958"


def test_an_anonymous_conversation_lead_is_absorbed_by_the_identified_one(bot, conversation):
    known = capture(bot, email="known@example.com", name="Known")
    anonymous = capture(bot, conversation=conversation, source=Lead.Source.WIDGET)
    assert anonymous.email == "" and anonymous.pk != known.pk
    merged = capture(bot, conversation=conversation, email="known@example.com", phone="9876543210")
    assert merged.pk == known.pk
    assert not Lead.objects.filter(pk=anonymous.pk).exists()
    assert list(merged.conversations.all()) == [conversation]
    assert merged.phone == "+919876543210"


def test_a_second_address_in_one_conversation_is_a_second_lead(bot, conversation):
    first = capture(bot, conversation=conversation, email="one@example.com")
    second = capture(bot, conversation=conversation, email="two@example.com")
    assert first.pk != second.pk
    assert set(conversation.leads.values_list("email", flat=True)) == {"one@example.com", "two@example.com"}


def test_update_refuses_an_address_another_lead_has(bot):
    LeadFactory(bot=bot, email="taken@example.com")
    lead = LeadFactory(bot=bot)
    with pytest.raises(Conflict):
        services.lead_update(lead=lead, email="Taken@example.com")
    services.lead_update(lead=lead, name="Ravi", phone="+91 98765 43210", status="contacted")
    lead.refresh_from_db()
    assert (lead.name, lead.phone, lead.status) == ("Ravi", "+919876543210", "contacted")


def test_status_change_validates(bot):
    lead = LeadFactory(bot=bot)
    with pytest.raises(ValidationFailed):
        services.lead_status_change(lead=lead, status="archived")
    services.lead_status_change(lead=lead, status=Lead.Status.WON)
    lead.refresh_from_db()
    assert lead.status == "won"


def test_score_breakdown_explains_the_score_and_events_record_each_change(bot, conversation, say, settings):
    settings.LEAD_QUALIFIED_THRESHOLD = 200  # keep the status out of this test
    lead = capture(bot, conversation=conversation, email="buyer@example.com")
    say("We want to buy 40 units, our budget is ₹3 lakhs. What's the price per unit?")
    lead = services.lead_score_recompute(lead=lead)
    lines = {line["marker"]: line for line in lead.score_breakdown}
    assert set(lines) == {"purchase_intent", "quantity", "budget", "price_question", "contact_completeness"}
    assert lines["quantity"]["evidence"] == "40 units"
    assert "₹3 lakhs" in lines["budget"]["evidence"]
    assert lines["purchase_intent"] == {"marker": "purchase_intent", "points": 20, "evidence": "want to buy"}
    # e-mail only: 40 % of 15 points.
    assert lines["contact_completeness"]["points"] == 6
    assert lead.score == sum(line["points"] for line in lead.score_breakdown) == 20 + 10 + 15 + 10 + 6
    events = {e.marker: e for e in LeadScoreEvent.objects.filter(lead=lead)}
    assert events["quantity"].points == 10 and events["quantity"].message is not None
    assert events["quantity"].score_after == lead.score

    # The phone arrives: only contact_completeness changes, by its delta.
    before = LeadScoreEvent.objects.count()
    services.lead_update(lead=lead, phone="9876543210")
    new_events = list(LeadScoreEvent.objects.order_by("id")[before:])
    assert [(e.marker, e.points) for e in new_events] == [("contact_completeness", 6)]


def test_score_is_clamped_to_100_and_per_bot_weights_apply(conversation, say):
    bot = conversation.bot
    bot.configuration = {"score_weights": {"purchase_intent": 90, "budget": 40, "price_question": 0}}
    bot.save(update_fields=["configuration"])
    lead = capture(bot, conversation=conversation, email="x@example.com")
    say("I want to buy it, my budget is 50k. How much is it?")
    lead = services.lead_score_recompute(lead=lead)
    markers = [line["marker"] for line in lead.score_breakdown]
    assert "price_question" not in markers  # weighted 0: not shown, does not count
    assert lead.score == 100


def test_qualification_fires_once_per_crossing(
    bot, conversation, say, signals_log, settings, django_capture_on_commit_callbacks
):
    settings.LEAD_QUALIFIED_THRESHOLD = 30
    with django_capture_on_commit_callbacks(execute=True):
        lead = capture(bot, conversation=conversation, email="q@example.com", phone="9876543210", name="Q")
    assert lead.status == Lead.Status.NEW and lead.score == 15
    with django_capture_on_commit_callbacks(execute=True):
        say("We need to buy this urgently")
    lead.refresh_from_db()
    assert lead.status == Lead.Status.QUALIFIED and lead.score >= 30 and lead.qualified_at is not None
    qualified = [entry for entry in signals_log if entry[0] == "qualified"]
    assert len(qualified) == 1
    with django_capture_on_commit_callbacks(execute=True):
        say("Also, what's the price?")  # still above: no second event
    assert len([entry for entry in signals_log if entry[0] == "qualified"]) == 1
    # Staff move it on; a later rescore does not drag the status back.
    services.lead_status_change(lead=lead, status=Lead.Status.CONTACTED)
    lead = services.lead_score_recompute(lead=lead)
    assert lead.status == Lead.Status.CONTACTED


@pytest.mark.django_db(transaction=True)
def test_lead_changed_inside_the_transaction_created_after_commit(signals_log):
    bot = BotFactory()
    conversation = ConversationFactory(bot=bot)
    lead = services.lead_capture(bot=bot, conversation=conversation, email="t@example.com", source="form")
    changed = [entry for entry in signals_log if entry[0] == "changed"]
    created = [entry for entry in signals_log if entry[0] == "created"]
    assert changed[0][1:3] == (lead.pk, True) and changed[0][4] is True
    assert "email" in changed[0][3]
    assert created == [("created", lead.pk, None, None, False)]
    # Rescoring (contact completeness) was reported as a change of the score fields.
    assert any({"score", "score_breakdown"} <= entry[3] for entry in changed[1:])
    signals_log.clear()
    services.lead_capture(bot=bot, email="t@example.com", source="form")
    assert not [entry for entry in signals_log if entry[0] == "created"]
    assert not [entry for entry in signals_log if entry[0] == "changed"]  # nothing changed, nothing sent
