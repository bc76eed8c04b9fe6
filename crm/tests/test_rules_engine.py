import json
import logging
import time

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.test import override_settings
from hubspot.utils.signature import Signature

from bots.tests.factories import BotFactory
from conversations.models import Conversation
from conversations.services import conversation_end, conversation_start
from crm.models import HubSpotConnection, LeadTag, MemoryRule, RuleExecution, SyncJob, Task, WebhookEvent
from crm.services.rules import memory_rule_create, rules_run
from leads.services import lead_capture, lead_status_change

pytestmark = pytest.mark.django_db


class BrokenBackend(EmailBackend):
    def send_messages(self, messages):
        raise ConnectionRefusedError("SMTP server down")


@pytest.fixture
def bot(owner):
    return BotFactory(owner=owner)


def rule(owner, text, bot=None):
    return memory_rule_create(owner=owner, text=text, bot=bot)


def test_every_action_runs_and_is_recorded_and_a_failure_does_not_stop_the_others(
    owner, bot, fake_hubspot, caplog, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        lead = lead_capture(bot=bot, email="ravi@example.com", name="Ravi", source="widget")
    rules = [
        rule(owner, 'when lead.qualified then create_task title="Call Ravi" type=call priority=high due_in=2h'),
        rule(owner, "when lead.qualified then notify_email to=typo-but-valid@example.com subject=Hot"),
        rule(owner, "when lead.qualified then tag_lead tag=hot"),
        rule(owner, "when lead.qualified then log level=warning message=qualified!"),
        rule(owner, "when lead.qualified then sync_to_hubspot"),
    ]
    # One failing action among them: the e-mail backend is down.
    caplog.set_level(logging.WARNING, logger="crm.services.rules")
    with override_settings(EMAIL_BACKEND=f"{__name__}.BrokenBackend"):
        executions = rules_run(
            event="lead.qualified", owner_id=owner.pk, payload={"lead_id": lead.pk, "bot_id": bot.pk}
        )
    outcomes = {e.rule_id: (e.outcome, e.detail) for e in executions}
    assert [outcomes[r.pk][0] for r in rules] == ["ok", "failed", "ok", "ok", "ok"]
    assert "SMTP server down" in outcomes[rules[1].pk][1]
    task = Task.objects.get()
    assert (task.title, task.type, task.priority, task.lead_id, task.rule_id) == (
        "Call Ravi",
        "call",
        "high",
        lead.pk,
        rules[0].pk,
    )
    assert task.due_at is not None and task.event == "lead.qualified"
    assert list(LeadTag.objects.values_list("tag", flat=True)) == ["hot"]
    assert any("qualified!" in r.getMessage() for r in caplog.records)
    assert SyncJob.objects.filter(lead=lead, kind="contact_upsert").exists()
    assert RuleExecution.objects.count() == 5


def test_notify_email_goes_to_the_owner_by_default(owner, bot):
    rule(owner, "when conversation.ended then notify_email")
    [execution] = rules_run(
        event="conversation.ended", owner_id=owner.pk, payload={"conversation_id": 5, "bot_id": bot.pk}
    )
    assert execution.outcome == "ok"
    [message] = mail.outbox
    assert message.to == [owner.email] and message.subject == "ChatBase: conversation.ended"
    assert "conversation_id=5" in message.body


def test_rules_of_other_owners_other_bots_other_events_or_disabled_do_not_run(owner, other_owner, bot):
    mine = rule(owner, "when lead.created then log", bot=bot)
    rule(owner, "when lead.created then log", bot=BotFactory(owner=owner))
    rule(owner, "when lead.qualified then log")
    rule(other_owner, "when lead.created then log")
    disabled = rule(owner, "when lead.created then log")
    MemoryRule.objects.filter(pk=disabled.pk).update(enabled=False)
    executions = rules_run(event="lead.created", owner_id=owner.pk, payload={"bot_id": bot.pk})
    assert [e.rule_id for e in executions] == [mine.pk]


def test_lead_actions_fail_clearly_without_a_lead(owner):
    rule(owner, "when hubspot.contact.creation then tag_lead tag=x")
    [execution] = rules_run(event="hubspot.contact.creation", owner_id=owner.pk, payload={"contact_id": "1"})
    assert execution.outcome == "failed" and "concerns no lead" in execution.detail


def test_lead_and_conversation_events_reach_the_rules(owner, bot, django_capture_on_commit_callbacks):
    rule(owner, "when lead.created then create_task type=welcome")
    rule(owner, "when lead.qualified then tag_lead tag=qualified")
    rule(owner, "when conversation.ended then create_task type=review")
    conversation = conversation_start(bot=bot, visitor_id="v", channel=Conversation.Channel.WIDGET)
    with django_capture_on_commit_callbacks(execute=True):
        lead = lead_capture(bot=bot, conversation=conversation, email="meena@example.com", source="widget")
    with django_capture_on_commit_callbacks(execute=True):
        lead_status_change(lead=lead, status="qualified")
    with django_capture_on_commit_callbacks(execute=True):
        conversation_end(conversation=conversation, reason="closed")
    assert sorted(Task.objects.values_list("type", "lead_id")) == [("review", lead.pk), ("welcome", lead.pk)]
    assert list(lead.crm_tags.values_list("tag", flat=True)) == ["qualified"]
    assert RuleExecution.objects.filter(outcome="ok").count() == 3


def test_events_without_matching_rules_queue_nothing(owner, bot, django_capture_on_commit_callbacks, settings):
    settings.HUBSPOT_ACCESS_TOKEN = ""
    with django_capture_on_commit_callbacks() as callbacks:
        lead_capture(bot=bot, email="x@example.com", source="widget")
    names = [repr(c) for c in callbacks]
    assert not [n for n in names if "rules_run_task" in n]


def _signed(client, body: str, secret: str):
    timestamp = str(int(time.time() * 1000))
    uri = "http://testserver/api/v1/webhooks/hubspot/"
    signature = Signature.get_signature(secret, body, "v3", http_uri=uri, http_method="POST", timestamp=timestamp)
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}
    return client.post("/api/v1/webhooks/hubspot/", data=body, content_type="application/json", headers=headers)


def test_hubspot_events_become_rule_events_for_the_owners_of_the_portal(
    client, owner, other_owner, bot, settings, fake_hubspot, django_capture_on_commit_callbacks
):
    settings.HUBSPOT_CLIENT_SECRET = "s3cret"
    HubSpotConnection.objects.create(owner=owner, portal_id="4242", auth_type="private_app")
    HubSpotConnection.objects.create(owner=other_owner, portal_id="9999", auth_type="private_app")
    with django_capture_on_commit_callbacks(execute=True):
        lead = lead_capture(bot=bot, email="known@example.com", source="widget")
    lead.refresh_from_db()
    rule(owner, "when hubspot.contact.creation then create_task type=welcome_email priority=high")
    rule(owner, "when hubspot.contact.propertyChange then tag_lead tag=changed-in-crm")
    rule(other_owner, "when hubspot.contact.creation then log")
    body = json.dumps(
        [
            {"eventId": 1, "subscriptionType": "contact.creation", "portalId": 4242, "objectId": 555},
            {
                "eventId": 2,
                "subscriptionType": "contact.propertyChange",
                "portalId": 4242,
                "objectId": int(lead.hubspot_id),
                "propertyName": "lifecyclestage",
                "propertyValue": "customer",
            },
            {"eventId": 3, "subscriptionType": "deal.creation", "portalId": 4242, "objectId": 7},
        ]
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert _signed(client, body, "s3cret").json() == {"received": 3, "replays": 0}
    task = Task.objects.get()
    assert (task.type, task.priority, task.owner_id, task.lead_id) == ("welcome_email", "high", owner.pk, None)
    assert list(lead.crm_tags.values_list("tag", flat=True)) == ["changed-in-crm"]
    execution = RuleExecution.objects.get(event="hubspot.contact.propertyChange")
    assert execution.payload == {
        "contact_id": lead.hubspot_id,
        "portal_id": "4242",
        "property": "lifecyclestage",
        "value": "customer",
        "lead_id": lead.pk,
    }
    assert dict(WebhookEvent.objects.values_list("event_id", "status")) == {
        "1": "processed",
        "2": "processed",
        "3": "ignored",
    }
    assert not RuleExecution.objects.filter(rule__owner=other_owner).exists()
    # The same delivery again: answered, not processed a second time.
    with django_capture_on_commit_callbacks(execute=True):
        assert _signed(client, body, "s3cret").json() == {"received": 0, "replays": 3}
    assert Task.objects.count() == 1
