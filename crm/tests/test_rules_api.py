import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bots.tests.factories import BotFactory
from crm.models import MemoryRule

pytestmark = pytest.mark.django_db
URL = "/api/v1/rules/"
LOG_RULE = {"text": "when lead.created then log", "event": "lead.created", "action": "log"}


def test_create_list_update_delete(owner_client):
    bot = BotFactory(owner=owner_client.user)
    created = owner_client.post(
        URL, {"text": "when hubspot.contact.creation then create_task type=welcome_email priority=high", "bot": bot.pk}
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["event"] == "hubspot.contact.creation" and body["action"] == "create_task"
    assert body["params"] == {"type": "welcome_email", "priority": "high"} and body["bot"] == bot.pk

    listed = owner_client.get(URL).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]

    patched = owner_client.patch(f"{URL}{body['id']}/", {"text": "when lead.created then log", "enabled": False})
    assert patched.status_code == 200
    assert (patched.json()["event"], patched.json()["action"], patched.json()["params"]) == ("lead.created", "log", {})
    assert patched.json()["enabled"] is False

    assert owner_client.delete(f"{URL}{body['id']}/").status_code == 204
    assert not MemoryRule.objects.exists()


def test_an_invalid_rule_is_a_400_with_the_reason_and_nothing_is_stored(owner_client):
    response = owner_client.post(URL, {"text": "when lead.created then create_task priority=urgent"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"
    assert "'priority' must be one of low, normal, high" in response.json()["detail"]
    rule = MemoryRule.objects.create(owner=owner_client.user, **LOG_RULE)
    response = owner_client.patch(f"{URL}{rule.pk}/", {"text": "when nothing then log"})
    assert response.status_code == 400 and response.json()["code"] == "unknown_event"
    rule.refresh_from_db()
    assert rule.event == "lead.created"
    assert MemoryRule.objects.count() == 1


def test_rules_are_owner_scoped(owner_client, other_owner):
    theirs = MemoryRule.objects.create(owner=other_owner, **LOG_RULE)
    assert owner_client.get(URL).json()["count"] == 0
    assert owner_client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert owner_client.delete(f"{URL}{theirs.pk}/").status_code == 404
    other_bot = BotFactory(owner=other_owner)
    response = owner_client.post(URL, {"text": "when lead.created then log", "bot": other_bot.pk})
    assert response.status_code == 404
    assert MemoryRule.objects.count() == 1


def test_the_list_costs_the_same_queries_for_many_rules(owner_client):
    bot = BotFactory(owner=owner_client.user)
    MemoryRule.objects.create(owner=owner_client.user, bot=bot, **LOG_RULE)
    owner_client.get(URL)  # the first request of a token also records its use
    with CaptureQueriesContext(connection) as one:
        owner_client.get(URL)
    for _ in range(5):
        MemoryRule.objects.create(owner=owner_client.user, bot=BotFactory(owner=owner_client.user), **LOG_RULE)
    with CaptureQueriesContext(connection) as six:
        assert owner_client.get(URL).json()["count"] == 6
    assert len(six) == len(one)


def test_anonymous_requests_are_401(api_client):
    assert api_client.get(URL).status_code == 401
