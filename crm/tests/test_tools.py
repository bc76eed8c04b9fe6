import json

import pytest

from bots.llm import tools
from bots.llm.types import ToolCall
from bots.tests.factories import BotFactory
from chatbase.core.errors import PermissionDenied, ValidationFailed
from crm import tools as crm_tools
from crm.models import MemoryRule

CRM_TOOLS = {
    "search_contacts",
    "get_contact_by_id",
    "update_contact",
    "create_note",
    "get_contact_notes",
    "create_memory_rule",
    "list_memory_rules",
}


def test_crm_tools_are_registered_and_never_offered_to_visitors():
    registered = {spec.name for spec in tools.all_specs()}
    assert registered >= CRM_TOOLS
    visitor = {spec.name for spec in tools.specs_for(tools.ToolContext(bot=None, visitor_id="v1"))}
    owner = {spec.name for spec in tools.specs_for(tools.ToolContext(bot=None, owner=object()))}
    assert not CRM_TOOLS & visitor
    assert owner >= CRM_TOOLS


async def test_a_visitor_calling_a_crm_tool_is_refused():
    context = tools.ToolContext(bot=None, visitor_id="v1")
    for name in ("search_contacts", "get_contact_notes", "update_contact"):
        outcome = await tools.execute(
            ToolCall(id="1", name=name, arguments={"query": "x", "contact_id": "1", "properties": {}}),
            context=context,
            offered=tools.all_specs(),
        )
        assert outcome.is_error and "not available" in outcome.content


def test_the_handlers_refuse_without_an_owner_too():
    with pytest.raises(PermissionDenied):
        crm_tools.search_contacts(tools.ToolContext(bot=None), query="x")


def test_the_tool_list_api_says_who_may_use_them(owner_client):
    rows = {row["name"]: row for row in owner_client.get("/api/v1/tools/").json()["results"]}
    assert rows["get_contact_notes"]["offered_to_visitors"] is False
    assert rows["search_knowledge"]["offered_to_visitors"] is True


@pytest.mark.django_db
def test_owner_tools_read_and_write_hubspot(owner, fake_hubspot):
    context = tools.ToolContext(bot=BotFactory(owner=owner), owner=owner)
    fake_hubspot.contacts["11"] = {"id": "11", "properties": {"email": "asha@example.com", "firstname": "Asha"}}
    found = crm_tools.search_contacts(context, query="asha")
    assert found == {"results": [{"id": "11", "email": "asha@example.com", "firstname": "Asha"}]}
    search = fake_hubspot.calls("POST", "/crm/v3/objects/contacts/search")[-1].body
    assert search["query"] == "asha" and search["limit"] == 5

    assert crm_tools.get_contact_by_id(context, contact_id="11")["email"] == "asha@example.com"
    updated = crm_tools.update_contact(context, contact_id="11", properties={"phone": "+911234567890", "zip": 600020})
    assert updated["phone"] == "+911234567890"
    assert fake_hubspot.calls("PATCH", "/crm/v3/objects/contacts/11")[-1].body == {
        "properties": {"phone": "+911234567890", "zip": "600020"}
    }
    note = crm_tools.create_note(context, contact_id="11", body="Prefers calls after 6 pm.")
    notes = crm_tools.get_contact_notes(context, contact_id="11")
    assert [(n["id"], n["body"]) for n in notes["results"]] == [(note["id"], "Prefers calls after 6 pm.")]


@pytest.mark.django_db
def test_hubspot_errors_become_tool_errors(owner, fake_hubspot, settings):
    context = tools.ToolContext(bot=None, owner=owner)
    with pytest.raises(ValidationFailed, match="resource not found"):
        crm_tools.get_contact_by_id(context, contact_id="404")
    with pytest.raises(ValidationFailed, match="between 1 and"):
        crm_tools.update_contact(context, contact_id="1", properties={})
    settings.HUBSPOT_ACCESS_TOKEN = ""
    with pytest.raises(ValidationFailed, match="not connected"):
        crm_tools.search_contacts(context, query="x")


@pytest.mark.django_db
def test_memory_rule_tools(owner, other_owner):
    bot = BotFactory(owner=owner)
    context = tools.ToolContext(bot=bot, owner=owner)
    created = crm_tools.create_memory_rule(
        context, text="when lead.qualified then create_task priority=high", this_bot_only=True
    )
    assert created["bot_id"] == bot.pk
    MemoryRule.objects.create(owner=other_owner, text="when lead.created then log", event="lead.created", action="log")
    listed = crm_tools.list_memory_rules(context)
    assert [r["id"] for r in listed["results"]] == [created["id"]]
    with pytest.raises(ValidationFailed, match="Unknown action"):
        crm_tools.create_memory_rule(context, text="when lead.created then dance")


@pytest.mark.django_db(transaction=True)
async def test_an_owner_runs_a_rule_tool_through_the_executor(owner):
    from channels.db import database_sync_to_async

    bot = await database_sync_to_async(BotFactory)(owner=owner)
    context = tools.ToolContext(bot=bot, owner=owner)
    outcome = await tools.execute(
        ToolCall(id="1", name="create_memory_rule", arguments={"text": "when lead.created then log"}),
        context=context,
        offered=tools.specs_for(context),
    )
    assert not outcome.is_error
    assert json.loads(outcome.content)["text"] == "when lead.created then log"
    bad = await tools.execute(
        ToolCall(id="2", name="create_memory_rule", arguments={"text": "when x then log"}),
        context=context,
        offered=tools.specs_for(context),
    )
    assert bad.is_error and "Unknown event" in bad.content
