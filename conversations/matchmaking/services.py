"""Matchmaking sessions: which bot, which personality, starting, ending, cleaning up.

A bot session is a Conversation on the `matchmaking` channel whose visitor is
"user:<user_id>", the external app's user. It is created by the fallback timer of
/ws/match/, by the sessions API or by the `chatbot_fallback_triggered` webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from bots import selectors as bot_selectors
from bots.models import Bot, PromptTemplate
from bots.services.bots import bot_create
from bots.templates import personalise, template_get, template_select
from chatbase.core import services as core_services
from chatbase.core.errors import NotAuthenticated, NotFound, Unavailable, ValidationFailed
from conversations import services as conversation_services
from conversations.matchmaking import queue
from conversations.matchmaking.models import MatchRoom, MatchTicket
from conversations.models import Conversation

logger = logging.getLogger(__name__)

COMPANION_NAME = "Matchmaking companion"
COMPANION_WELCOME = "Hi {name}! Nobody is free just yet, so I'll keep you company until someone is."
MAX_USER_ID = 200
MAX_POOL = 50
_POOL = re.compile(r"^[\w.:-]*$")


def user_id_clean(value: object) -> str:
    """An external app's user id: a non-empty string (or integer) of at most 200 characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationFailed("user_id: a string or an integer is required.")
    text = str(value).strip()
    if not text or len(text) > MAX_USER_ID:
        raise ValidationFailed(f"user_id: between 1 and {MAX_USER_ID} characters.")
    return text


def pool_clean(value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > MAX_POOL or not _POOL.match(value):
        raise ValidationFailed(f"pool: at most {MAX_POOL} letters, digits, '.', ':', '_' or '-'.")
    return value


def user_hash(user_id: str, secret: str | None = None) -> str:
    """What the app's backend computes for match.join's `user_hash`."""
    secret = secret if secret is not None else settings.MATCHMAKING_IDENTITY_SECRET
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def user_hash_verify(*, user_id: str, supplied: object) -> None:
    """With MATCHMAKING_IDENTITY_SECRET set, only the app's backend can vouch for a user id."""
    if not settings.MATCHMAKING_IDENTITY_SECRET:
        return
    if not isinstance(supplied, str) or not hmac.compare_digest(supplied, user_hash(user_id)):
        raise NotAuthenticated("user_hash does not match user_id.", code="invalid_user_hash")


def companion_bot() -> Bot:
    """The demo owner's companion bot (no documents), created on first use."""
    existing = Bot.objects.filter(owner__email=settings.DEMO_OWNER_EMAIL, name=COMPANION_NAME).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        # Creation is rare and must happen once however many sockets fall back at once:
        # a transaction-scoped advisory lock serialises the creators.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('chatbase.matchmaking.companion'))")
        owner, _ = core_services.user_get_or_create(email=settings.DEMO_OWNER_EMAIL)
        bot = Bot.objects.filter(owner=owner, name=COMPANION_NAME).first()
        if bot is None:
            bot = bot_create(
                owner=owner,
                name=COMPANION_NAME,
                description="A friendly companion for people waiting to be matched with someone.",
                welcome_message=COMPANION_WELCOME,
            )
    return bot


def matchmaking_bot(*, public_key: str | None = None) -> Bot:
    """The bot that keeps lonely users company: the one named, else MATCHMAKING_BOT, else the companion."""
    key = public_key or settings.MATCHMAKING_BOT
    if not key:
        return companion_bot()
    bot = bot_selectors.bot_get_by_public_key(public_key=key)
    if bot is None:
        if public_key:
            raise NotFound("No such bot.")
        raise Unavailable("MATCHMAKING_BOT names no bot.", code="misconfigured")
    if not bot.is_active:
        raise Unavailable("The matchmaking bot is inactive.", code="bot_inactive")
    return bot


def _profile_context(profile: dict) -> str:
    # What selection rules search: the words the user chose to describe themselves.
    parts = []
    for key in ("interests", "topics", "mood", "bio", "looking_for", "about"):
        value = profile.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value not in (None, ""):
            parts.append(str(value))
    return " ".join(parts)[:2000]


def template_for_profile(*, profile: dict, explicit: str | None = None, now: datetime | None = None) -> PromptTemplate:
    """The personality for a user: the one asked for, else the first whose rules match the
    profile and the time of day (age limits, keywords, topics, hours), else
    MATCHMAKING_DEFAULT_TEMPLATE (a social default rather than the support-style one)."""
    if explicit:
        chosen = template_get(slug=explicit)
        if chosen is None:
            raise ValidationFailed(f"template: no template {explicit[:100]!r}.", code="unknown_template")
        return chosen
    chosen = template_select(text=_profile_context(profile), profile=profile, now=now)
    if chosen is None or chosen.is_default:
        chosen = template_get(slug=settings.MATCHMAKING_DEFAULT_TEMPLATE) or chosen
    if chosen is None:
        raise Unavailable("No prompt templates are installed.", code="no_templates")
    return chosen


def session_welcome(conversation: Conversation) -> str:
    bot = conversation.bot
    return personalise(bot.welcome_message, bot_name=bot.name, profile=conversation.profile)


def session_start(
    *,
    user_id: str,
    profile: object,
    source: str,
    template: str | None = None,
    bot: Bot | None = None,
) -> Conversation:
    """A bot session for an app's user, personalised with their profile."""
    profile = conversation_services.profile_clean(profile)
    bot = bot or matchmaking_bot()
    chosen = template_for_profile(profile=profile, explicit=template)
    conversation = conversation_services.conversation_start(
        bot=bot,
        visitor_id=f"user:{user_id}",
        channel=Conversation.Channel.MATCHMAKING,
        profile=profile,
        template=chosen,
        metadata={"source": source, "user_id": user_id},
    )
    conversation.bot = bot
    conversation.template = chosen
    return conversation


def session_end(*, conversation: Conversation, reason: str) -> Conversation:
    return conversation_services.conversation_end(conversation=conversation, reason=reason)


def session_user_id(conversation: Conversation) -> str:
    return conversation.visitor_id.removeprefix("user:")


@transaction.atomic
def ticket_bot_start(*, ticket_id: int, user_id: str, profile: dict) -> Conversation | None:
    """The fallback: a bot session for a ticket still waiting, attached to it in the same
    transaction (None when a pairer put it in a room first, or it is gone)."""
    # Waits for a pairer holding the ticket; then sees the room it made.
    waiting = MatchTicket.objects.select_for_update().filter(pk=ticket_id, room__isnull=True).exists()
    if not waiting:
        return None
    conversation = session_start(user_id=user_id, profile=profile, source="websocket")
    MatchTicket.objects.filter(pk=ticket_id).update(bot_conversation=conversation)
    return conversation


def tickets_sweep(*, now: datetime | None = None) -> int:
    """Remove the ghosts of crashed processes; the other side of their rooms is told."""
    removed = 0
    for ticket_id in queue.tickets_stale(now=now):
        with transaction.atomic():
            departure = queue.ticket_remove_if_stale(ticket_id=ticket_id, now=now)
            queue.departure_notify_after_commit(departure)
        removed += departure is not None
    return removed


def matchmaking_cleanup(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep: ghosts out of the queue, abandoned sessions and rooms ended.

    * tickets whose process stopped refreshing them (crashed, killed) are removed;
      the other side of their room is told (channel layer) and their bot session ends;
    * matchmaking sessions nobody is connected to, idle for MATCH_SESSION_END_AFTER_MINUTES,
      end ("abandoned"); pausing after 5 idle minutes is conversations_lifecycle's job;
    * rooms left open with neither ticket alive are closed.
    """
    now = now or timezone.now()
    removed = tickets_sweep(now=now)
    attached = MatchTicket.objects.filter(bot_conversation__isnull=False).values("bot_conversation_id")
    idle = (
        Conversation.objects.filter(
            channel=Conversation.Channel.MATCHMAKING,
            status__in=[Conversation.Status.ACTIVE, Conversation.Status.PAUSED],
            last_activity_at__lt=now - timedelta(minutes=settings.MATCH_SESSION_END_AFTER_MINUTES),
        )
        .exclude(pk__in=attached)
        .order_by("pk")[:500]
    )
    ended = 0
    for conversation in idle:
        conversation_services.conversation_end(conversation=conversation, reason="abandoned")
        ended += 1
    rooms = (
        MatchRoom.objects.filter(ended_at__isnull=True)
        .exclude(pk__in=MatchTicket.objects.filter(room__isnull=False).values("room_id"))
        .update(ended_at=now, end_reason="abandoned")
    )
    return {"tickets_removed": removed, "sessions_ended": ended, "rooms_closed": rooms}
