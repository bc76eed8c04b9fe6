"""How the crm app reacts to lead and conversation events (connected in CrmConfig.ready)."""

from __future__ import annotations

import logging

from django.db import transaction

from crm.services.hubspot import hubspot_enabled_for
from crm.services.rules import rules_emit
from crm.services.sync import (
    SYNCED_LEAD_FIELDS,
    sync_job_enqueue_contact,
    sync_job_enqueue_deal,
    sync_job_enqueue_note,
)
from leads.services import consent_required

logger = logging.getLogger(__name__)
# Messages quoted in a HubSpot note when the conversation has no summary yet.
NOTE_TRANSCRIPT_MESSAGES = 20


def on_lead_changed(sender, *, lead, created: bool, changed_fields, **kwargs) -> None:
    """Inside the lead's write transaction: the outbox rows commit with the change or not at all."""
    if not hubspot_enabled_for(owner_id=lead.bot.owner_id):
        return
    if consent_required(lead.bot) and not lead.consent:
        # The owner asks visitors for consent: without it the lead stays here.
        return
    if created or set(changed_fields) & SYNCED_LEAD_FIELDS:
        sync_job_enqueue_contact(lead=lead)
    if lead.qualified_at is not None and (lead.email or lead.hubspot_id):
        # One deal per lead, ever: the idempotency key makes a second request a no-op.
        sync_job_enqueue_deal(lead=lead)


def _lead_event(event: str, lead) -> None:
    rules_emit(event=event, owner_id=lead.bot.owner_id, payload={"lead_id": lead.pk, "bot_id": lead.bot_id})


def on_lead_created(sender, *, lead, **kwargs) -> None:
    _lead_event("lead.created", lead)


def on_lead_qualified(sender, *, lead, **kwargs) -> None:
    _lead_event("lead.qualified", lead)


def conversation_note_text(conversation) -> str:
    if conversation.summary:
        return conversation.summary
    messages = list(conversation.messages.order_by("-id").values_list("role", "text")[:NOTE_TRANSCRIPT_MESSAGES])
    lines = [f"{role}: {text}" for role, text in reversed(messages) if role in ("user", "assistant")]
    return "Conversation transcript (latest messages):\n" + "\n".join(lines)


def on_conversation_ended(sender, *, conversation, reason: str = "", **kwargs) -> None:
    """After commit: a note per lead of the conversation (once), and the rules."""
    owner_id = conversation.bot.owner_id
    leads = list(conversation.leads.all())
    with transaction.atomic():
        if leads and hubspot_enabled_for(owner_id=owner_id):
            summary = conversation_note_text(conversation)
            for lead in leads:
                if (lead.email or lead.hubspot_id) and (lead.consent or not consent_required(conversation.bot)):
                    sync_job_enqueue_note(lead=lead, conversation_id=conversation.pk, summary=summary)
        payload = {"conversation_id": conversation.pk, "bot_id": conversation.bot_id, "reason": reason}
        if leads:
            payload["lead_id"] = leads[0].pk
        rules_emit(event="conversation.ended", owner_id=owner_id, payload=payload)
