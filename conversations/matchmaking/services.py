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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from bots import selectors as bot_selectors
from bots.models import Bot, PromptTemplate
from bots.services.bots import bot_create
from bots.templates import personalise, template_get, template_select
from chatbase.core import services as core_services
from chatbase.core.errors import NotAuthenticated, NotFound, Unavailable, ValidationFailed
from conversations import services as conversation_services
from conversations.matchmaking import queue
from conversations.matchmaking.batching import Coalescer
from conversations.matchmaking.models import MatchMessage, MatchRoom, MatchTicket
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


def _session_new(
    *, user_id: str, profile: object, source: str, template: str | None = None, bot: Bot | None = None
) -> Conversation:
    profile = conversation_services.profile_clean(profile)
    return Conversation(
        bot=bot or matchmaking_bot(),
        visitor_id=f"user:{user_id}",
        channel=Conversation.Channel.MATCHMAKING,
        profile=profile,
        template=template_for_profile(profile=profile, explicit=template),
        metadata={"source": source, "user_id": user_id},
    )


def session_start(
    *,
    user_id: str,
    profile: object,
    source: str,
    template: str | None = None,
    bot: Bot | None = None,
) -> Conversation:
    """A bot session for an app's user, personalised with their profile."""
    session = _session_new(user_id=user_id, profile=profile, source=source, template=template, bot=bot)
    return conversation_services.conversations_start(conversations=[session])[0]


@transaction.atomic
def session_end(*, conversation: Conversation, reason: str) -> Conversation:
    """End a bot session. A /ws/match/ socket it keeps company (the app ended it over the
    API) is told after commit: it gets `session.ended` and keeps waiting for a human."""
    ticket = MatchTicket.objects.filter(bot_conversation=conversation).first()
    conversation = conversation_services.conversation_end(conversation=conversation, reason=reason)
    if ticket is not None:
        MatchTicket.objects.filter(pk=ticket.pk, bot_conversation=conversation).update(bot_conversation=None)
        event = {"type": "match.bot_ended", "conversation_id": conversation.pk, "reason": reason}
        channel = ticket.channel_name
        transaction.on_commit(lambda: async_to_sync(get_channel_layer().send)(channel, event), robust=True)
    return conversation


def room_message_add(*, room_id: str, user_id: str, text: str, client_id: str = "") -> MatchMessage:
    """What a human wrote in their room, stored before it is relayed to the other; a
    resend with the same client_id is the message already stored (relayed again: the
    peer's client drops a message_id it has)."""
    client_id = client_id[:64]
    if client_id:
        existing = MatchMessage.objects.filter(room_id=room_id, user_id=user_id, client_id=client_id).first()
        if existing is not None:
            return existing
    if not MatchRoom.objects.filter(pk=room_id, ended_at__isnull=True).exists():
        raise ValidationFailed("This room has ended.", code="room_ended")
    try:
        with transaction.atomic():
            return MatchMessage.objects.create(room_id=room_id, user_id=user_id, text=text, client_id=client_id)
    except IntegrityError:
        # The same resend raced in from another connection: that one was stored.
        return MatchMessage.objects.get(room_id=room_id, user_id=user_id, client_id=client_id)


def session_user_id(conversation: Conversation) -> str:
    return conversation.visitor_id.removeprefix("user:")


@dataclass(frozen=True)
class FallbackRequest:
    ticket_id: int
    user_id: str
    profile: dict


@transaction.atomic
def tickets_bot_start(requests: Sequence[FallbackRequest]) -> list[Conversation | None]:
    """The fallback of each ticket still waiting: a bot session, attached to it in the
    same transaction; None for a ticket a pairer put in a room first, or that is gone.
    Fallbacks due at the same moment (their users joined in the same burst) share the
    transaction and one INSERT."""
    # Waits for a pairer holding a ticket; then sees the room it made.
    waiting = set(
        MatchTicket.objects.select_for_update()
        .filter(pk__in=[r.ticket_id for r in requests], room__isnull=True)
        .order_by("pk")  # the order joins lock in: no deadlock between the two
        .values_list("pk", flat=True)
    )
    if not waiting:
        return [None] * len(requests)
    bot = matchmaking_bot()
    chosen = [request for request in requests if request.ticket_id in waiting]
    sessions = conversation_services.conversations_start(
        conversations=[
            _session_new(user_id=request.user_id, profile=request.profile, source="websocket", bot=bot)
            for request in chosen
        ]
    )
    tickets = [
        MatchTicket(pk=r.ticket_id, bot_conversation=session) for r, session in zip(chosen, sessions, strict=True)
    ]
    MatchTicket.objects.bulk_update(tickets, ["bot_conversation"])
    by_ticket = {request.ticket_id: session for request, session in zip(chosen, sessions, strict=True)}
    return [by_ticket.get(request.ticket_id) for request in requests]


def ticket_bot_start(*, ticket_id: int, user_id: str, profile: dict) -> Conversation | None:
    """The fallback of one ticket (see tickets_bot_start)."""
    return tickets_bot_start([FallbackRequest(ticket_id, user_id, profile)])[0]


_fallbacks: Coalescer[FallbackRequest, Conversation | None] = Coalescer(tickets_bot_start, run=queue.db)


async def bot_start(*, ticket_id: int, user_id: str, profile: dict) -> Conversation | None:
    """ticket_bot_start from the consumer, with every fallback due at the same moment."""
    return await _fallbacks.submit(FallbackRequest(ticket_id, user_id, profile))


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
