import pytest
from django.urls import reverse

from bots.tests.factories import BotFactory
from crm.models import HubSpotConnection, MemoryRule

pytestmark = pytest.mark.django_db


def test_connection_state_is_shown_and_tokens_are_not(staff_client, owner, settings):
    settings.HUBSPOT_ACCESS_TOKEN = ""
    connection = HubSpotConnection.objects.create(
        owner=owner,
        auth_type="oauth",
        access_token="very-secret-access",
        refresh_token="very-secret-refresh",
        status="error",
        last_error="Token refresh refused: HTTP 400: revoked",
    )
    page = staff_client.get(reverse("admin:crm_hubspotconnection_change", args=[connection.pk]))
    assert page.status_code == 200
    assert b"Token refresh refused: HTTP 400: revoked" in page.content
    assert b"very-secret" not in page.content
    listing = staff_client.get(reverse("admin:crm_hubspotconnection_changelist"))
    assert b"Error" in listing.content and b"very-secret" not in listing.content


def test_the_disconnect_action_forgets_the_tokens(staff_client, owner):
    connection = HubSpotConnection.objects.create(owner=owner, auth_type="oauth", access_token="a", refresh_token="r")
    response = staff_client.post(
        reverse("admin:crm_hubspotconnection_changelist"),
        {"action": "disconnect", "_selected_action": [connection.pk]},
    )
    assert response.status_code == 302
    connection.refresh_from_db()
    assert (connection.status, connection.access_token, connection.refresh_token) == ("disconnected", "", "")


def test_the_rule_form_parses_and_refuses_bad_rules(staff_client, owner):
    bot = BotFactory(owner=owner)
    url = reverse("admin:crm_memoryrule_add")
    form = {
        "owner": owner.pk,
        "bot": bot.pk,
        "enabled": "on",
        "executions-TOTAL_FORMS": "0",
        "executions-INITIAL_FORMS": "0",
    }
    bad = staff_client.post(url, {**form, "text": "when lead.created then explode"})
    assert bad.status_code == 200 and b"Unknown action" in bad.content
    assert not MemoryRule.objects.exists()
    good = staff_client.post(url, {**form, "text": "when lead.qualified then create_task priority=high"})
    assert good.status_code == 302
    rule = MemoryRule.objects.get()
    assert (rule.event, rule.action, rule.params) == ("lead.qualified", "create_task", {"priority": "high"})
    other_bot = BotFactory()
    wrong = staff_client.post(url, {**form, "bot": other_bot.pk, "text": "when lead.created then log"})
    assert b"another owner" in wrong.content
    for name in (
        "crm_memoryrule_changelist",
        "crm_ruleexecution_changelist",
        "crm_googlesync_changelist",
        "crm_task_changelist",
        "crm_leadtag_changelist",
        "crm_syncjob_changelist",
    ):
        assert staff_client.get(reverse(f"admin:{name}")).status_code == 200
