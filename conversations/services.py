"""Writes of conversations and messages.

The user's message is committed before anything else happens (retrieval, the
model call): whatever fails afterwards, what the visitor wrote is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from bots.models import Bot, PromptTemplate
from chatbase.core.errors import NotFound, TooLong, ValidationFailed
from conversations import selectors
from conversations.budgets import budget_visitor_new
from conversations.models import Conversation, Message
from conversations.signals import conversation_ended, user_message_stored

logger = logging.getLogger(__name__)

MAX_CLIENT_ID = 64
COST_QUANTUM = Decimal("0.00000001")
MAX_PROFILE_BYTES = 4096


def profile_clean(profile: object) -> dict:
    """A profile is a small JSON object of scalars and lists of scalars."""
    if profile in (None, ""):
        return {}
    if not isinstance(profile, dict):
        raise ValidationFailed("profile: must be a JSON object.")
    cleaned = {}
    for key, value in profile.items():
        if not isinstance(key, str) or len(key) > 50:
            raise ValidationFailed("profile: keys must be short strings.")
        if isinstance(value, list):
            if len(value) > 20 or not all(isinstance(v, (str, int, float)) for v in value):
                raise ValidationFailed(f"profile.{key}: a list of at most 20 strings or numbers.")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValidationFailed(f"profile.{key}: must be a string, number, boolean or list.")
        cleaned[key] = value
    if len(str(cleaned)) > MAX_PROFILE_BYTES:
        raise ValidationFailed("profile: too large.")
    return cleaned


def conversation_start(
    *,
    bot: Bot,
    visitor_id: str,
    channel: str,
    profile: dict | None = None,
    template: PromptTemplate | None = None,
    metadata: dict | None = None,
) -> Conversation:
    # One INSERT, in autocommit: a transaction around it only added BEGIN and COMMIT
    # to every new visitor's handshake.
    return Conversation.objects.create(
        bot=bot,
        visitor_id=visitor_id,
        channel=channel,
        profile=profile_clean(profile),
        template=template,
        metadata=metadata or {},
    )


@transaction.atomic
def conversations_start(*, conversations: list[Conversation]) -> list[Conversation]:
    """New conversations (unsaved instances) in one INSERT: matchmaking's fallbacks that
    fall due together, one per user of the same burst."""
    for conversation in conversations:
        conversation.profile = profile_clean(conversation.profile)
        conversation.metadata = conversation.metadata or {}
    return Conversation.objects.bulk_create(conversations)


def conversation_open(
    *,
    bot: Bot,
    visitor_id: str,
    channel: str,
    profile: dict | None = None,
    metadata: dict | None = None,
    new_visitor: bool = False,
) -> Conversation:
    """The visitor's conversation that has not ended, or a new one.

    `new_visitor`: the id was minted just now, so the visitor has no conversation to
    resume and has spent nothing today (said to the budget cache, which otherwise
    sums the day's messages on their first question).
    """
    if new_visitor:
        budget_visitor_new(bot_id=bot.pk, visitor_id=visitor_id)
    else:
        existing = selectors.conversation_latest_open(bot=bot, visitor_id=visitor_id, channel=channel)
        if existing is not None:
            return existing
    return conversation_start(bot=bot, visitor_id=visitor_id, channel=channel, profile=profile, metadata=metadata)


def conversation_for_owner(*, bot: Bot, owner, conversation_id: int | None = None) -> Conversation:
    """An owner's API conversation with their bot: the given one (404 if it is not
    theirs, on this bot) or the latest open one, else a new one."""
    visitor_id = f"owner:{owner.pk}"
    if conversation_id is not None:
        conversation = Conversation.objects.filter(
            pk=conversation_id, bot=bot, visitor_id=visitor_id, channel=Conversation.Channel.API
        ).first()
        if conversation is None:
            raise NotFound("No such conversation with this bot.")
        if conversation.status == Conversation.Status.ENDED:
            raise ValidationFailed("This conversation has ended; start a new one.", code="conversation_ended")
        return conversation
    return conversation_open(bot=bot, visitor_id=visitor_id, channel=Conversation.Channel.API)


def _validate_text(text: object) -> str:
    if not isinstance(text, str):
        raise ValidationFailed("text: must be a string.")
    text = text.strip()
    if not text:
        raise ValidationFailed("text: the message is empty.")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise TooLong(f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.")
    return text


def _validate_client_id(client_id: object) -> str:
    if client_id in (None, ""):
        return ""
    if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID:
        raise ValidationFailed(f"client_id: a string of at most {MAX_CLIENT_ID} characters.")
    return client_id


@dataclass
class StoredMessage:
    message: Message
    # False when the same client_id was stored before (a resend after a reconnect).
    created: bool
    # The answer's row (message_assistant_begin), when asked for and the message is new.
    answer: Message | None = None


def message_user_add(
    *, conversation: Conversation, text: object, client_id: object = "", sender: str = "", answer_row: bool = False
) -> StoredMessage:
    """Store what the user wrote, once per client_id, and wake the conversation up.

    `answer_row`: also create the answer's row (see message_assistant_begin) in the
    same INSERT, for a caller about to answer: one statement and one commit fewer
    on the way to the first token.
    """
    text = _validate_text(text)
    client_id = _validate_client_id(client_id)
    now = timezone.now()
    try:
        with transaction.atomic():
            # One UPDATE reads the real status (the one in memory may be stale: the
            # beat ends idle conversations), takes the row lock that orders concurrent
            # senders, and wakes the conversation up.
            woken = (
                Conversation.objects.filter(pk=conversation.pk)
                .exclude(status=Conversation.Status.ENDED)
                .update(message_count=F("message_count") + 1, last_activity_at=now, status=Conversation.Status.ACTIVE)
            )
            if woken:
                message = Message(
                    conversation=conversation, role=Message.Role.USER, text=text, client_id=client_id, sender=sender
                )
                if answer_row:
                    # One INSERT of both rows; PostgreSQL numbers them in this order.
                    answer = _answer_row(conversation)
                    Message.objects.bulk_create([message, answer])
                else:
                    answer = None
                    message.save(force_insert=True)
                # send_robust: the message is committed; a failing receiver (say, one whose
                # broker is down) is logged and must not turn that into the sender's error.
                transaction.on_commit(
                    lambda: user_message_stored.send_robust(
                        sender=Conversation, conversation=conversation, message=message
                    )
                )
    except IntegrityError:
        # This client_id was stored before: a resend after a reconnect, or the same
        # message racing in from another connection. (Not looked up first: that would
        # be a query on every message for the rare resend.)
        existing = selectors.message_get_by_client_id(conversation=conversation, client_id=client_id)
        if existing is None:
            raise
        return StoredMessage(existing, created=False)
    if not woken:
        existing = selectors.message_get_by_client_id(conversation=conversation, client_id=client_id)
        if existing is not None:  # stored before the conversation ended
            return StoredMessage(existing, created=False)
        raise ValidationFailed("This conversation has ended; start a new one.", code="conversation_ended")
    conversation.status = Conversation.Status.ACTIVE
    conversation.last_activity_at = now
    conversation.message_count += 1
    return StoredMessage(message, created=True, answer=answer)


def _answer_row(conversation: Conversation) -> Message:
    return Message(conversation=conversation, role=Message.Role.ASSISTANT, text="", incomplete=True)


def message_assistant_begin(*, conversation: Conversation) -> Message:
    """The answer's row, created before its first token so deltas carry its id.

    It stays `incomplete` with empty text until finished: a crash mid-answer leaves an
    honest record, and empty messages are never shown or sent to a model. One INSERT
    in autocommit, no transaction around it: it is on every answer's path.
    """
    answer = _answer_row(conversation)
    answer.save(force_insert=True)
    return answer


@transaction.atomic
def message_assistant_finish(
    *,
    message: Message,
    text: str,
    sources: list[dict],
    providers: list[str],
    model: str = "",
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: Decimal = Decimal(0),
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    incomplete: bool = False,
) -> Message:
    # Stored with 8 decimals: keep the instance equal to the row.
    cost_usd = Decimal(cost_usd).quantize(COST_QUANTUM)
    message.text = text
    message.sources = sources
    message.providers = providers
    message.model = model
    message.input_tokens = input_tokens
    message.output_tokens = output_tokens
    message.cost_usd = cost_usd
    message.latency_ms = latency_ms
    message.first_token_ms = first_token_ms
    message.incomplete = incomplete
    message.save(
        update_fields=[
            "text",
            "sources",
            "providers",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_ms",
            "first_token_ms",
            "incomplete",
        ]
    )
    Conversation.objects.filter(pk=message.conversation_id).update(
        message_count=F("message_count") + 1,
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        cost_usd=F("cost_usd") + cost_usd,
        last_activity_at=timezone.now(),
    )
    return message


@transaction.atomic
def message_assistant_discard(*, message: Message) -> None:
    """No provider produced a word: the empty placeholder goes (the user's message stays)."""
    Message.objects.filter(pk=message.pk, text="").delete()


@transaction.atomic
def message_peer_add(*, conversation: Conversation, text: str, sender: str) -> Message:
    """A message between two humans (matchmaking rooms): stored, never answered by a model."""
    text = _validate_text(text)
    message = Message.objects.create(conversation=conversation, role=Message.Role.USER, text=text, sender=sender)
    Conversation.objects.filter(pk=conversation.pk).update(
        message_count=F("message_count") + 1, last_activity_at=timezone.now()
    )
    return message


@transaction.atomic
def conversation_update_profile(*, conversation: Conversation, profile: dict) -> Conversation:
    conversation.profile = profile_clean({**conversation.profile, **profile_clean(profile)})
    conversation.save(update_fields=["profile"])
    return conversation


@transaction.atomic
def conversation_set_template(*, conversation: Conversation, template: PromptTemplate | None) -> Conversation:
    conversation.template = template
    conversation.save(update_fields=["template"])
    return conversation


@transaction.atomic
def conversation_pause(*, conversation: Conversation) -> None:
    if conversation.status == Conversation.Status.ACTIVE:
        conversation.status = Conversation.Status.PAUSED
        conversation.save(update_fields=["status"])


@transaction.atomic
def conversation_end(*, conversation: Conversation, reason: str) -> Conversation:
    """End a conversation (idempotent); listeners hear of it once, after commit."""
    updated = (
        Conversation.objects.filter(pk=conversation.pk)
        .exclude(status=Conversation.Status.ENDED)
        .update(status=Conversation.Status.ENDED, end_reason=reason[:50], ended_at=timezone.now())
    )
    conversation.refresh_from_db(fields=["status", "end_reason", "ended_at"])
    if updated:
        transaction.on_commit(
            lambda: conversation_ended.send(sender=Conversation, conversation=conversation, reason=reason)
        )
    return conversation


def conversations_lifecycle(*, now: datetime | None = None) -> dict[str, int]:
    """Pause conversations idle for CONVERSATION_PAUSE_AFTER_SECONDS; end those idle
    for CONVERSATION_END_AFTER_HOURS. The next message resumes a paused one."""
    now = now or timezone.now()
    paused = Conversation.objects.filter(
        status=Conversation.Status.ACTIVE,
        last_activity_at__lt=now - timedelta(seconds=settings.CONVERSATION_PAUSE_AFTER_SECONDS),
    ).update(status=Conversation.Status.PAUSED)
    stale = Conversation.objects.filter(
        status__in=[Conversation.Status.ACTIVE, Conversation.Status.PAUSED],
        last_activity_at__lt=now - timedelta(hours=settings.CONVERSATION_END_AFTER_HOURS),
    ).order_by("pk")[:500]
    ended = 0
    for conversation in stale:
        conversation_end(conversation=conversation, reason="idle")
        ended += 1
    return {"paused": paused, "ended": ended}


@transaction.atomic
def conversation_summary_store(*, conversation: Conversation, summary: str, covered: int) -> None:
    Conversation.objects.filter(pk=conversation.pk, summary_message_count__lt=covered).update(
        summary=summary, summary_message_count=covered
    )
