"""Reads of matchmaking sessions for the owner API."""

from __future__ import annotations

from django.db.models import QuerySet

from bots import selectors as bot_selectors
from bots.models import Bot
from chatbase.core.errors import NotFound, ValidationFailed
from chatbase.core.models import User
from conversations.models import Conversation


def session_list(*, owner: User, user_id: str | None = None) -> QuerySet[Conversation]:
    sessions = Conversation.objects.filter(bot__owner=owner, channel=Conversation.Channel.MATCHMAKING)
    if user_id:
        sessions = sessions.filter(visitor_id=f"user:{user_id}")
    return sessions.select_related("bot", "template").order_by("-started_at", "-id")


def session_get(*, owner: User, session_id: int) -> Conversation:
    """The owner's session (one of their bots'), or NotFound."""
    session = session_list(owner=owner).filter(pk=session_id).first()
    if session is None:
        raise NotFound("No such session.")
    return session


def session_bot(*, owner: User, bot_id: int | None) -> Bot:
    """The bot named, else the owner's most recent active bot."""
    if bot_id is not None:
        bot = bot_selectors.bot_get(owner=owner, bot_id=bot_id)
    else:
        bot = bot_selectors.bot_list(owner=owner).filter(status=Bot.Status.ACTIVE).first()
        if bot is None:
            raise ValidationFailed("bot_id: you have no active bot; create one first.", code="no_bot")
    if not bot.is_active:
        raise ValidationFailed("bot_id: this bot is inactive.", code="bot_inactive")
    return bot
