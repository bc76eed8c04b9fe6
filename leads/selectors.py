"""Reads of leads: an owner's leads across their bots, filtered; one lead; its transcript."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet

from chatbase.core.errors import NotFound
from conversations.models import Conversation, Message
from leads.models import Lead, LeadScoreEvent


@dataclass(frozen=True)
class LeadFilters:
    bot_id: int | None = None
    status: str | None = None
    score_min: int | None = None
    score_max: int | None = None
    area_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str = ""


def lead_list(*, owner, filters: LeadFilters | None = None, with_conversations: bool = True) -> QuerySet[Lead]:
    f = filters or LeadFilters()
    leads = Lead.objects.filter(bot__owner=owner).select_related("bot", "nearest_area")
    if f.bot_id is not None:
        leads = leads.filter(bot_id=f.bot_id)
    if f.status:
        leads = leads.filter(status=f.status)
    if f.score_min is not None:
        leads = leads.filter(score__gte=f.score_min)
    if f.score_max is not None:
        leads = leads.filter(score__lte=f.score_max)
    if f.area_id is not None:
        leads = leads.filter(nearest_area_id=f.area_id)
    if f.created_after is not None:
        leads = leads.filter(created_at__gte=f.created_after)
    if f.created_before is not None:
        leads = leads.filter(created_at__lt=f.created_before)
    if f.search:
        leads = leads.filter(
            Q(email__icontains=f.search)
            | Q(name__icontains=f.search)
            | Q(phone__icontains=f.search)
            | Q(company__icontains=f.search)
        )
    if with_conversations:
        leads = leads.prefetch_related(Prefetch("conversations", queryset=Conversation.objects.only("id")))
    return leads.order_by("-created_at", "-id")


def lead_email_taken(*, bot_id: int, email: str, exclude_pk: int | None = None) -> bool:
    """Whether another lead of the bot has this address (case-insensitively)."""
    return bool(email) and Lead.objects.filter(bot_id=bot_id, email__iexact=email).exclude(pk=exclude_pk).exists()


def lead_get(*, owner, lead_id: int) -> Lead:
    lead = (
        lead_list(owner=owner)
        .prefetch_related(Prefetch("score_events", queryset=LeadScoreEvent.objects.order_by("created_at", "id")))
        .filter(pk=lead_id)
        .first()
    )
    if lead is None:
        raise NotFound("No such lead.")
    return lead


def lead_transcript(*, lead: Lead, limit: int = 500) -> list[Message]:
    """The messages of the lead's conversations, oldest first (at most `limit`, the latest)."""
    messages = (
        Message.objects.filter(conversation__leads=lead)
        .exclude(role__in=[Message.Role.SYSTEM, Message.Role.TOOL])
        .exclude(text="")
        .order_by("-created_at", "-id")[:limit]
    )
    return list(reversed(messages))
