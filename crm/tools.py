"""Model tools over the owner's HubSpot and memory rules (registered in CrmConfig.ready).

Every one of them is for an authenticated owner only: a website visitor's model must
neither read the owner's CRM nor change it. The tool registry enforces that
(``writes`` / ``owner_only``); each handler checks it again, since it is the last line.
"""

from __future__ import annotations

from bots.llm.tools import ToolContext, ToolSpec, register
from chatbase.core.errors import PermissionDenied, Unavailable, ValidationFailed
from crm import hubspot
from crm.services.hubspot import HubSpotNotConnected, hubspot_client_for

MAX_PROPERTIES = 20
CONTACT_ID = {"type": "string", "minLength": 1, "maxLength": 40, "description": "The HubSpot contact id."}


def _owner(context: ToolContext):
    if context.owner is None:
        raise PermissionDenied("This tool is only for the bot's owner.")
    return context.owner


def _hubspot(context: ToolContext, call):
    """Run `call(client)` against the owner's HubSpot, turning its errors into tool errors."""
    try:
        return call(hubspot_client_for(owner=_owner(context)))
    except HubSpotNotConnected as exc:
        raise ValidationFailed(f"HubSpot is not connected: {exc}") from exc
    except hubspot.HubSpotRejected as exc:
        raise ValidationFailed(f"HubSpot refused: {exc}") from exc
    except hubspot.HubSpotRetryable as exc:
        raise Unavailable(f"HubSpot is unavailable: {exc}") from exc


def _contact(row: dict) -> dict:
    return {"id": str(row["id"]), **{k: v for k, v in row.get("properties", {}).items() if v not in (None, "")}}


def search_contacts(context: ToolContext, *, query: str, limit: int = 5) -> dict:
    rows = _hubspot(context, lambda client: client.contact_search(query=query, limit=limit))
    return {"results": [_contact(row) for row in rows]}


def get_contact_by_id(context: ToolContext, *, contact_id: str) -> dict:
    return _contact(_hubspot(context, lambda client: client.contact_get(contact_id=contact_id)))


def update_contact(context: ToolContext, *, contact_id: str, properties: dict) -> dict:
    if not properties or len(properties) > MAX_PROPERTIES:
        raise ValidationFailed(f"Give between 1 and {MAX_PROPERTIES} properties.")
    if not all(isinstance(key, str) and isinstance(value, (str, int, float)) for key, value in properties.items()):
        raise ValidationFailed("Property values must be strings or numbers.")
    clean = {key: str(value) for key, value in properties.items()}
    row = _hubspot(context, lambda client: client.contact_update(contact_id=contact_id, properties=clean))
    return _contact(row)


def create_note(context: ToolContext, *, contact_id: str, body: str) -> dict:
    from django.utils import timezone

    note_id = _hubspot(
        context, lambda client: client.note_create(contact_id=contact_id, body=body, timestamp=timezone.now())
    )
    return {"id": note_id, "contact_id": contact_id}


def get_contact_notes(context: ToolContext, *, contact_id: str, limit: int = 10) -> dict:
    rows = _hubspot(context, lambda client: client.contact_notes(contact_id=contact_id, limit=limit))
    notes = [
        {
            "id": str(row["id"]),
            "body": row.get("properties", {}).get("hs_note_body", ""),
            "timestamp": row.get("properties", {}).get("hs_timestamp", ""),
        }
        for row in rows
    ]
    return {"results": notes}


def _rule(rule) -> dict:
    return {"id": rule.pk, "text": rule.text, "bot_id": rule.bot_id, "enabled": rule.enabled}


def create_memory_rule(context: ToolContext, *, text: str, this_bot_only: bool = False) -> dict:
    from crm.services.rules import memory_rule_create

    rule = memory_rule_create(owner=_owner(context), text=text, bot=context.bot if this_bot_only else None)
    return _rule(rule)


def list_memory_rules(context: ToolContext) -> dict:
    from crm.selectors import memory_rule_list

    return {"results": [_rule(rule) for rule in memory_rule_list(owner=_owner(context))[:100]]}


def _limit(default: int, maximum: int) -> dict:
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": maximum,
        "description": f"At most this many (default {default}).",
    }


TOOLS = [
    ToolSpec(
        name="search_contacts",
        description="Search the owner's HubSpot contacts by name, e-mail, phone or company.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 200}, "limit": _limit(5, 20)},
            "required": ["query"],
            "additionalProperties": False,
        },
        writes=False,
        owner_only=True,
        handler=search_contacts,
    ),
    ToolSpec(
        name="get_contact_by_id",
        description="Read one HubSpot contact of the owner by its id.",
        parameters={
            "type": "object",
            "properties": {"contact_id": CONTACT_ID},
            "required": ["contact_id"],
            "additionalProperties": False,
        },
        writes=False,
        owner_only=True,
        handler=get_contact_by_id,
    ),
    ToolSpec(
        name="update_contact",
        description='Change properties of a HubSpot contact (e.g. {"phone": "+91...", "company": "Acme"}).',
        parameters={
            "type": "object",
            "properties": {
                "contact_id": CONTACT_ID,
                "properties": {"type": "object", "description": "HubSpot property names and their new values."},
            },
            "required": ["contact_id", "properties"],
            "additionalProperties": False,
        },
        writes=True,
        handler=update_contact,
    ),
    ToolSpec(
        name="create_note",
        description="Attach a note to a HubSpot contact.",
        parameters={
            "type": "object",
            "properties": {"contact_id": CONTACT_ID, "body": {"type": "string", "minLength": 1, "maxLength": 10000}},
            "required": ["contact_id", "body"],
            "additionalProperties": False,
        },
        writes=True,
        handler=create_note,
    ),
    ToolSpec(
        name="get_contact_notes",
        description="Read the notes attached to a HubSpot contact.",
        parameters={
            "type": "object",
            "properties": {"contact_id": CONTACT_ID, "limit": _limit(10, 50)},
            "required": ["contact_id"],
            "additionalProperties": False,
        },
        writes=False,
        owner_only=True,
        handler=get_contact_notes,
    ),
    ToolSpec(
        name="create_memory_rule",
        description=(
            "Create one of the owner's automation rules, written `when EVENT then ACTION [key=value ...]`, "
            "e.g. `when lead.qualified then create_task priority=high`. Events: lead.created, lead.qualified, "
            "conversation.ended, hubspot.contact.creation, hubspot.contact.propertyChange, "
            "gmail.message.received, calendar.event.created. Actions: create_task (title, type, priority, due_in), "
            "log (message, level), sync_to_hubspot, tag_lead (tag), notify_email (to, subject)."
        ),
        parameters={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 1000},
                "this_bot_only": {"type": "boolean", "description": "Apply only to events of this bot."},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
        writes=True,
        handler=create_memory_rule,
    ),
    ToolSpec(
        name="list_memory_rules",
        description="List the owner's automation rules.",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
        writes=False,
        owner_only=True,
        handler=list_memory_rules,
    ),
]


def register_all() -> None:
    for spec in TOOLS:
        register(spec)
