"""The `capture_lead` tool: the model records contact details the visitor gave.

It writes, so the registry offers it only where writing tools are allowed: to
an owner's own conversations (the API, external-app sessions relayed by the
owner's server), never to an anonymous widget visitor (bots/llm/tools.py). A
widget visitor's details are captured without the model: the lead form
(`lead.submit`) and the detector that reads every message (docs/leads.md).

Even where it is offered, the model cannot invent a contact: every value must
appear in what the user wrote in this conversation.
"""

from __future__ import annotations

import re

from bots.llm.tools import ToolContext, ToolSpec, register
from chatbase.core.errors import NotFound, ValidationFailed
from conversations.models import Conversation, Message
from leads import services
from leads.extraction import email_normalise, phone_normalise
from leads.models import Lead

_DIGITS = re.compile(r"\D")


def _said_by_user(conversation: Conversation) -> tuple[str, str]:
    texts = Message.objects.filter(conversation=conversation, role=Message.Role.USER).values_list("text", flat=True)
    text = "\n".join(texts).casefold()
    return text, _DIGITS.sub("", text)


def _check_said(field: str, value: str, text: str, digits: str) -> None:
    if field == "phone":
        # The visitor may have typed it with or without the country code.
        national = value.removeprefix("+")
        if not any(tail and tail in digits for tail in (national, national[-10:])):
            raise ValidationFailed(f"{field}: the user did not write this phone number.")
    elif " ".join(value.casefold().split()) not in " ".join(text.split()):
        raise ValidationFailed(f"{field}: the user did not write this.")


def capture_lead(context: ToolContext, *, email: str = "", name: str = "", phone: str = "", company: str = "") -> dict:
    if context.conversation_id is None:
        raise ValidationFailed("There is no conversation to attach the lead to.")
    conversation = Conversation.objects.filter(pk=context.conversation_id, bot=context.bot).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    values = {"email": email_normalise(email), "phone": phone_normalise(phone), "name": name, "company": company}
    values = {k: v.strip() for k, v in values.items() if v and v.strip()}
    if not values:
        raise ValidationFailed("Give at least one of email, phone, name or company.")
    text, digits = _said_by_user(conversation)
    for field, value in values.items():
        _check_said(field, value, text, digits)
    lead = services.lead_capture(
        bot=context.bot,
        conversation=conversation,
        source=services.SOURCE_FOR_CHANNEL.get(conversation.channel, Lead.Source.API),
        **values,
    )
    return {"lead_id": lead.pk, "saved": sorted(values), "score": lead.score}


CAPTURE_LEAD = register(
    ToolSpec(
        name="capture_lead",
        description=(
            "Save the user's contact details as a sales lead when they share them and want to be contacted. "
            "Only pass details the user wrote themselves in this conversation."
        ),
        parameters={
            "type": "object",
            "properties": {
                "email": {"type": "string", "maxLength": 254, "description": "The user's e-mail address."},
                "name": {"type": "string", "maxLength": 200, "description": "The user's name."},
                "phone": {"type": "string", "maxLength": 40, "description": "The user's phone number."},
                "company": {"type": "string", "maxLength": 200, "description": "The user's company."},
            },
            "required": [],
            "additionalProperties": False,
        },
        writes=True,
        handler=capture_lead,
    )
)
