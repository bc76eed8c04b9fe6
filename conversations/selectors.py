"""Reads of conversations and messages."""

from __future__ import annotations

from django.db.models import Count, F, OuterRef, Prefetch, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from bots.models import Bot, Document
from chatbase.core.errors import NotFound
from chatbase.core.models import User
from conversations.budgets import day_start
from conversations.models import Conversation, Message


def conversation_latest_open(*, bot: Bot, visitor_id: str, channel: str) -> Conversation | None:
    """The visitor's most recent conversation that has not ended."""
    return (
        Conversation.objects.filter(bot=bot, visitor_id=visitor_id, channel=channel)
        .exclude(status=Conversation.Status.ENDED)
        .select_related("template")
        .order_by("-last_activity_at", "-id")
        .first()
    )


def message_window(*, conversation: Conversation, limit: int) -> list[Message]:
    """The last `limit` non-empty user and assistant messages, oldest first."""
    latest = list(
        Message.objects.filter(conversation=conversation, role__in=[Message.Role.USER, Message.Role.ASSISTANT])
        .exclude(text="")
        .order_by("-created_at", "-id")[:limit]
    )
    latest.reverse()
    return latest


def visitor_history(*, bot: Bot, visitor_id: str, channel: str, limit: int) -> list[Message]:
    """The last `limit` non-empty user and assistant messages of all the visitor's
    conversations with the bot, oldest first (a verified user's history on any device)."""
    latest = list(
        Message.objects.filter(
            conversation__bot=bot,
            conversation__visitor_id=visitor_id,
            conversation__channel=channel,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT],
        )
        .exclude(text="")
        .order_by("-created_at", "-id")[:limit]
    )
    latest.reverse()
    return latest


def messages_before(*, conversation: Conversation, count: int) -> list[Message]:
    """The conversation's first `count` user and assistant messages (what the summary covers)."""
    return list(
        Message.objects.filter(conversation=conversation, role__in=[Message.Role.USER, Message.Role.ASSISTANT])
        .exclude(text="")
        .order_by("created_at", "id")[:count]
    )


def message_get_by_client_id(*, conversation: Conversation, client_id: str) -> Message | None:
    if not client_id:
        return None
    return Message.objects.filter(conversation=conversation, client_id=client_id).first()


def message_answer_to(*, message: Message) -> Message | None:
    """The assistant message that followed a user message, if any."""
    return (
        Message.objects.filter(conversation_id=message.conversation_id, role=Message.Role.ASSISTANT, id__gt=message.id)
        .order_by("id")
        .first()
    )


def conversation_list(*, bot: Bot) -> QuerySet[Conversation]:
    return Conversation.objects.filter(bot=bot).select_related("template").order_by("-last_activity_at", "-id")


def conversation_get(*, owner: User, conversation_id: int) -> Conversation:
    """The owner's conversation with its messages, or NotFound."""
    conversation = (
        Conversation.objects.filter(pk=conversation_id, bot__owner=owner)
        .select_related("bot", "template")
        .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("created_at", "id")))
        .first()
    )
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def bot_queryset_with_usage_today(bots: QuerySet[Bot]) -> QuerySet[Bot]:
    """Bots annotated with `document_count` and `tokens_today` (model tokens since 00:00 UTC).

    One query for a whole admin page: both are correlated subqueries, so the two
    to-many relations never multiply each other's rows.
    """
    documents = Document.objects.filter(bot=OuterRef("pk")).order_by().values("bot").annotate(n=Count("pk")).values("n")
    tokens = (
        Message.objects.filter(conversation__bot=OuterRef("pk"), created_at__gte=day_start())
        .order_by()
        .values("conversation__bot")
        .annotate(total=Sum(F("input_tokens") + F("output_tokens")))
        .values("total")
    )
    return bots.annotate(
        document_count=Coalesce(Subquery(documents), 0),
        tokens_today=Coalesce(Subquery(tokens), 0),
    )
