"""The visitor chat websocket: /ws/chat/{public_key}/?visitor=TOKEN (docs/protocol.md).

Tokens are sent with `send_json` straight from the task that reads the model's
stream: the channel layer is never used per token (DESIGN.md 4a).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from django.conf import settings

from bots import selectors as bot_selectors
from bots.configuration import normalise_origin
from bots.preview import origin_is_own_host, preview_token_valid
from chatbase.core import deferred
from chatbase.core.clientip import client_ip_from_scope
from chatbase.core.consumers import NO_CHANNEL_LAYER, JsonConsumer
from chatbase.core.db import after_reply_call, db_call
from chatbase.core.errors import ChatbaseError, RateLimited, ValidationFailed
from chatbase.core.ratelimit import Rate, arate_limit_hit, arate_limits_hit
from conversations import selectors, services
from conversations.admission import PrepareSlot, prepare_slot
from conversations.chat import (
    AnswerDelta,
    AnswerDone,
    TurnContext,
    answer_stream,
    message_user_add_and_prepare,
    prefetch_retrieval,
)
from conversations.identity import (
    VERIFIED_PREFIX,
    IdentityRejected,
    identity_verify,
    visitor_is_verified,
    visitor_token_issue,
    visitor_token_read,
)
from conversations.models import Conversation, Message
from geo.iplookup import ip_anonymise
from leads import services as lead_services

logger = logging.getLogger(__name__)

# Close codes of a refused handshake (the browser sees a failed connection either way).
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429
CLOSE_NOT_AUTHENTICATED = 4401
# How long a disconnect waits for the partial answer to be stored.
CANCEL_GRACE_SECONDS = 5


def message_frame(message: Message) -> dict:
    return {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "sources": message.sources,
        "provider": message.provider,
        "incomplete": message.incomplete,
        "created_at": message.created_at.isoformat(),
    }


def public_sources(sources: list[dict]) -> list[dict]:
    """What a visitor sees of a source (no internal ids beyond the document's)."""
    return [
        {
            "number": s.get("number"),
            "document_title": s.get("document_title", ""),
            "url": s.get("url", ""),
            "snippet": s.get("snippet", ""),
        }
        for s in sources
        if not s.get("duplicate")
    ]


async def answer_frames(
    *, conversation: Conversation, context: TurnContext | None = None, slot: PrepareSlot | None = None
) -> AsyncIterator[tuple[dict, Message | None]]:
    """One streamed answer as websocket frames: `answer.delta`s, then `answer.done` with
    the stored message (shared by the chat and matchmaking sockets)."""
    async for event in answer_stream(conversation=conversation, context=context, slot=slot):
        if isinstance(event, AnswerDelta):
            yield {"type": "answer.delta", "message_id": event.message_id, "delta": event.text}, None
        elif isinstance(event, AnswerDone):
            message = event.message
            done = {
                "type": "answer.done",
                "message_id": message.pk,
                "text": message.text,
                "sources": public_sources(message.sources),
                "provider": message.provider,
                "incomplete": message.incomplete,
            }
            yield done, message


class ChatConsumer(JsonConsumer):
    accepted_types = frozenset({"message.send", "lead.submit"})
    # Visitor chat needs no channel layer (answers stream straight from this consumer,
    # DESIGN.md 4a). Not subscribing means a Redis outage cannot close these sockets:
    # channels' receive loop would raise on every open connection.
    channel_layer_alias = NO_CHANNEL_LAYER

    async def connect(self):
        self.bot = None
        self.last_user_text: str | None = None
        self.conversation: Conversation | None = None
        self.answer_tasks: set[asyncio.Task] = set()
        self.answer_lock = asyncio.Lock()
        self.lead_lock = asyncio.Lock()  # the form's capture and held detections, one at a time
        self.ip = client_ip_from_scope(self.scope) or "unknown"
        query = {k: v[0] for k, v in parse_qs(self.scope.get("query_string", b"").decode("latin-1")).items()}

        bot = await db_call(bot_selectors.bot_get_by_public_key)(
            public_key=self.scope["url_route"]["kwargs"]["public_key"]
        )
        if bot is None or not bot.is_active:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not self._origin_allowed(bot, preview_token=query.get("preview", "")):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            await arate_limit_hit(key=f"chat-connect:{self.ip}", rate=Rate.parse(settings.CHAT_CONNECT_RATE_PER_IP))
        except RateLimited:
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        try:
            verified_id = self._verified_visitor(bot, query)
        except IdentityRejected as exc:
            # Accepted only to say why: a browser cannot read a refused handshake.
            await self.accept()
            await self.send_error(exc)
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.bot = bot
        visitor_id = verified_id or visitor_token_read(bot=bot, token=query.get("visitor", ""))
        if visitor_id and not verified_id and visitor_is_verified(visitor_id):
            visitor_id = None  # a verified user's token is no proof without their hash
        # A missing, foreign or expired token gets a new visitor; a valid one is re-signed.
        self.visitor_id, self.visitor_token = visitor_token_issue(bot=bot, visitor_id=visitor_id)
        self.conversation = await db_call(services.conversation_open)(
            bot=bot,
            visitor_id=self.visitor_id,
            channel=Conversation.Channel.WIDGET,
            metadata=self._metadata(),
            new_visitor=visitor_id is None,
        )
        if verified_id:
            # Everything this user said to the bot, from any device.
            history = await db_call(selectors.visitor_history)(
                bot=bot,
                visitor_id=verified_id,
                channel=Conversation.Channel.WIDGET,
                limit=settings.CHAT_SESSION_HISTORY_MESSAGES,
            )
        elif self.conversation.message_count:
            history = await db_call(selectors.message_window)(
                conversation=self.conversation, limit=settings.CHAT_SESSION_HISTORY_MESSAGES
            )
        else:
            history = []  # a new visitor's (or an empty) conversation: nothing to look up
        self.last_user_text = next((m.text for m in reversed(history) if m.role == Message.Role.USER), None)
        await self.accept()
        await self.send_json(
            {
                "type": "session.ready",
                "conversation_id": self.conversation.pk,
                "visitor_token": self.visitor_token,
                "welcome": bot.welcome_message,
                "suggestions": bot.suggestions,
                "history": [message_frame(m) | {"sources": public_sources(m.sources)} for m in history],
                "identity": {"user_id": verified_id.removeprefix(VERIFIED_PREFIX)} if verified_id else None,
            }
        )

    def _metadata(self) -> dict:
        # The visitor's /24 (never the full address): a lead found later in what they
        # write is located from it, as a lead from the form is.
        metadata = {"origin": self.origin}
        anonymised = ip_anonymise(self.ip)
        if anonymised:
            metadata["ip_anonymised"] = anonymised
        return metadata

    def _verified_visitor(self, bot, query: dict[str, str]) -> str | None:
        """The verified visitor id of a site user, None for an anonymous visitor;
        IdentityRejected for a bad hash, or no hash where the bot requires one."""
        user_id, user_hash, ts = query.get("user_id", ""), query.get("user_hash", ""), query.get("ts", "")
        if not (user_id or user_hash or ts):
            if bot.configuration.get("identity_verification"):
                raise IdentityRejected("This bot talks to signed-in users only (data-user-id and data-user-hash).")
            return None
        return identity_verify(bot=bot, user_id=user_id, user_hash=user_hash, ts=ts)

    def _origin_allowed(self, bot, *, preview_token: str = "") -> bool:
        headers = dict(self.scope.get("headers") or [])
        raw = headers.get(b"origin", b"").decode("latin-1")
        self.origin = ""
        if not raw:
            return False  # nothing matches a missing Origin
        try:
            self.origin = normalise_origin(raw)
        except ValidationFailed:
            return False
        if self.origin in bot.allowed_origins:
            return True
        # The admin's live preview: a page of this very server, with a staff-issued token.
        host = headers.get(b"host", b"").decode("latin-1")
        return preview_token_valid(bot=bot, token=preview_token) and origin_is_own_host(origin=self.origin, host=host)

    async def disconnect(self, code):
        # The visitor left: stop the model (the request upstream is closed) and keep
        # the partial answer, which answer_stream stores as incomplete.
        for task in list(self.answer_tasks):
            task.cancel()
        if self.answer_tasks:
            await asyncio.wait(self.answer_tasks, timeout=CANCEL_GRACE_SECONDS)

    async def handle_message_send(self, content):
        text, client_id = content.get("text"), content.get("client_id") or ""
        if not isinstance(client_id, str):
            raise ValidationFailed("client_id: must be a string.")
        await arate_limits_hit(
            (f"chat-visitor:{self.bot.pk}:{self.visitor_id}", Rate.parse(settings.CHAT_RATE_PER_VISITOR)),
            (f"chat-ip:{self.ip}", Rate.parse(settings.CHAT_RATE_PER_IP)),
        )
        # Under a burst of questions, this one waits its turn here rather than stall
        # the answers already streaming (conversations/admission.py).
        arrived = time.monotonic()
        slot = await prepare_slot()
        handed_over = False
        try:
            handed_over = await self._message_send(text, client_id, slot, arrived)
        finally:
            if not handed_over:
                slot.release()

    async def _message_send(self, text, client_id, slot: PrepareSlot, arrived: float) -> bool:
        """Store and answer the message; True if its answer took `slot` over."""
        prefetch_retrieval(bot=self.bot, text=text, previous=self.last_user_text)
        # The message's lead detection waits for its answer's first token (_answer):
        # run inside the store, it stood between the message and that token.
        until_first_token = deferred.Held()
        context = None
        # No answer in progress: this one starts at once, and keeps the slot.
        prepare = not self.answer_tasks
        try:
            with deferred.held_until_reply(until_first_token):
                # With no answer in progress, the answer's context is read with the
                # message: one trip to a database thread instead of two. Beside one, it
                # is read once that answer is done, so that it includes it.
                stored, context = await self._store(text, client_id, prepare=prepare, arrived=arrived)
            self.last_user_text = stored.message.text
            await self.send_json(
                {"type": "message.ack", "client_id": client_id or None, "message_id": stored.message.pk}
            )
        except BaseException:
            # Stored (or committing on its thread) but never to be answered here: what
            # it holds runs now; a commit still to come finds the Held closed and runs
            # its detection itself.
            await _uncancelled(self._run_held(until_first_token))
            if context is not None:  # its answer's row, never to be written
                await _uncancelled(db_call(services.message_assistant_discard)(message=context.answer))
            raise
        if not stored.created:
            # A resend after a reconnect: it was answered (or is being answered) already.
            slot.release()
            await self._run_held(until_first_token)
            return False
        # Behind an answer in progress, it would hold the slot through that answer's
        # stream: it is given back, and answer_stream takes one when this one starts.
        if not prepare:
            slot.release()
        task = asyncio.create_task(self._answer(until_first_token, context, slot if prepare else None))
        self.answer_tasks.add(task)
        task.add_done_callback(self.answer_tasks.discard)
        return prepare

    async def handle_lead_submit(self, content):
        """The widget's lead form: {email, name, phone, consent?} (any subset) -> lead.saved."""
        await arate_limit_hit(
            key=f"chat-lead:{self.bot.pk}:{self.visitor_id}", rate=Rate.parse(settings.LEAD_SUBMIT_RATE)
        )
        fields = {key: content.get(key) for key in ("email", "name", "phone")}
        if not any(isinstance(value, str) and value.strip() for value in fields.values()):
            raise ValidationFailed("Give at least one of email, name or phone.")
        # Never beside a message's detection: each looks for the conversation's lead
        # before creating one, and side by side both could create one.
        async with self.lead_lock:
            lead = await db_call(lead_services.lead_capture)(
                bot=self.bot,
                conversation=self.conversation,
                source="form",
                consent=content.get("consent"),
                ip=self.ip,
                **fields,
            )
        await self.send_json({"type": "lead.saved", "lead_id": lead.pk})

    async def _store(
        self, text, client_id, *, prepare: bool, arrived: float
    ) -> tuple[services.StoredMessage, TurnContext | None]:
        """The stored message, and its answer's context if `prepare` (and it could be read)."""

        def store():
            if prepare:
                return message_user_add_and_prepare(
                    conversation=self.conversation, text=text, client_id=client_id, started=arrived
                )
            return services.message_user_add(conversation=self.conversation, text=text, client_id=client_id), None

        try:
            return await db_call(store)()
        except ValidationFailed as exc:
            if exc.code != "conversation_ended":
                raise
        # Ended while the socket was open (idle for a day): carry on in a new one.
        self.conversation = await db_call(services.conversation_open)(
            bot=self.bot, visitor_id=self.visitor_id, channel=Conversation.Channel.WIDGET, metadata=self._metadata()
        )
        return await db_call(store)()

    async def _run_held(self, held: deferred.Held) -> None:
        """Run what `held` kept (a message's lead detection), on a database thread; not
        cancelled with the caller, which waits for it instead. Never raises but
        CancelledError: the answer it runs beside is not to fail for it."""
        calls = held.close()
        if not calls:
            return
        try:
            async with self.lead_lock:
                # Anything this work sends runs now, not held for the answer beside it.
                with deferred.not_held():
                    await _uncancelled(db_call(deferred.run)(calls))
        except Exception:
            logger.exception("Work held for the first token of conversation %s failed", self.conversation.pk)

    async def _answer(
        self, until_first_token: deferred.Held, context: TurnContext | None = None, slot: PrepareSlot | None = None
    ):
        # `slot` is answer_stream's to give back: nothing here may await before it starts.
        held = deferred.Held()  # in-process tasks the answer sends (the rolling summary), run after it
        side: asyncio.Task | None = None  # what waited for the first token, running beside the answer
        try:
            # One answer at a time per socket, in the order the messages came.
            async with self.answer_lock:
                try:
                    with deferred.held_until_reply(held):
                        async for frame, _ in answer_frames(conversation=self.conversation, context=context, slot=slot):
                            if frame["type"] == "answer.done":
                                # Done by now as a rule (it ran while the answer streamed);
                                # awaited so that what it found is there once the answer is.
                                side = side or asyncio.ensure_future(self._run_held(until_first_token))
                                await asyncio.shield(side)
                            await self.send_json(frame)
                            if side is None:  # the first token is out
                                side = asyncio.ensure_future(self._run_held(until_first_token))
                except asyncio.CancelledError:
                    raise
                except ChatbaseError as exc:
                    await self.send_error(exc)
                except Exception as exc:  # the socket stays usable; the visitor is told
                    logger.exception("Answering in conversation %s failed", self.conversation.pk)
                    await self.send_error(exc)
        finally:
            try:
                # No first token (refused, failed, or the visitor left before it): run it now.
                await _uncancelled(side if side is not None else self._run_held(until_first_token))
            finally:
                calls = held.close()
                if calls:
                    # Also when the visitor left mid-answer. Not cancelled with the
                    # answer: disconnect() waits for it (bounded).
                    await _uncancelled(after_reply_call(deferred.run)(calls))


async def _uncancelled(awaitable) -> None:
    """Await `awaitable` to its end even if the caller is cancelled meanwhile (the
    cancellation is raised once it is done)."""
    future = asyncio.ensure_future(awaitable)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise
