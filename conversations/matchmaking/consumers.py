"""The matchmaking websocket: /ws/match/ (docs/matchmaking.md, docs/protocol.md).

A socket is idle until `match.join`, then waiting (its ticket is in the queue; after
MATCH_FALLBACK_SECONDS a bot keeps it company), then in a room with a human until
either side leaves. Bot answers stream straight from this consumer (DESIGN.md 4a);
the channel layer carries only the low-rate events: paired, room ended, replaced,
the webhook's fallback, and the human messages of a room.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from chatbase.core import metrics
from chatbase.core.clientip import client_ip_from_scope
from chatbase.core.consumers import JsonConsumer
from chatbase.core.errors import ChatbaseError, RateLimited, TooLong, ValidationFailed
from chatbase.core.ratelimit import Rate, arate_limit_hit
from conversations import services as conversation_services
from conversations.consumers import answer_frames
from conversations.matchmaking import queue, services
from conversations.matchmaking.queue import db
from conversations.models import Conversation

logger = logging.getLogger(__name__)

IDLE, WAITING, ROOM = "idle", "waiting", "room"
CLOSE_RATE_LIMITED = 4429
CLOSE_REPLACED = 4409
CANCEL_GRACE_SECONDS = 5


class _Heartbeat:
    """One task per process refreshes every ticket this process holds, and sweeps
    away the ghosts of crashed processes (the beat does too, when it runs)."""

    def __init__(self):
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sockets = 0

    def attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.sockets, self.task = loop, 0, None
        self.sockets += 1
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())

    def detach(self) -> None:
        self.sockets -= 1
        if self.sockets <= 0 and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.MATCH_HEARTBEAT_SECONDS)
            try:
                await db(queue.tickets_heartbeat)()
                await db(services.tickets_sweep)()
                for pool in await db(queue.pools_pairable)():
                    queue.pairing_kick(pool)
            except Exception:
                logger.exception("matchmaking heartbeat failed")


heartbeat = _Heartbeat()


def _text_clean(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed("text: a non-empty string is required.")
    text = text.strip()
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise TooLong(f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.")
    return text


class MatchConsumer(JsonConsumer):
    accepted_types = frozenset({"match.join", "message.send", "match.leave"})

    async def connect(self):
        self.state = IDLE
        self.ticket_id: int | None = None
        self.user_id: str | None = None
        self.profile: dict = {}
        self.pool = ""
        self.room: str | None = None
        self.group: str | None = None
        self.bot_conversation: Conversation | None = None
        self.fallback_task: asyncio.Task | None = None
        self.answer_tasks: set[asyncio.Task] = set()
        self.answer_lock = asyncio.Lock()
        # Serialises the state changes that race: the timer, pairing, room end, leaving.
        self.state_lock = asyncio.Lock()
        self.joined_at = 0.0
        # Rooms that ended before this socket heard it was in them.
        self.dead_rooms: set[str] = set()
        self.heartbeat_attached = False
        ip = client_ip_from_scope(self.scope) or "unknown"
        try:
            await arate_limit_hit(key=f"match-connect:{ip}", rate=Rate.parse(settings.MATCH_CONNECT_RATE_PER_IP))
        except RateLimited:
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        await self.accept()
        heartbeat.attach()
        self.heartbeat_attached = True

    async def disconnect(self, code):
        if self.heartbeat_attached:
            heartbeat.detach()
            self.heartbeat_attached = False
        async with self.state_lock:
            await self._quit(reason="disconnected", peer_reason="peer_disconnected")

    # --- frames from the client ---------------------------------------------------
    async def handle_match_join(self, content):
        loop = asyncio.get_running_loop()
        # The timer counts from the frame's arrival, not from when the ticket is stored.
        started = loop.time()
        if self.state != IDLE:
            raise ValidationFailed("Already in the queue or a session; send match.leave first.", code="joined")
        user_id = services.user_id_clean(content.get("user_id"))
        services.user_hash_verify(user_id=user_id, supplied=content.get("user_hash"))
        profile = conversation_services.profile_clean(content.get("profile"))
        pool = services.pool_clean(content.get("pool"))
        await arate_limit_hit(key=f"match-join:{user_id}", rate=Rate.parse(settings.MATCH_JOIN_RATE_PER_USER))
        async with self.state_lock:
            ticket, departure = await queue.join(
                queue.JoinRequest(user_id=user_id, channel_name=self.channel_name, profile=profile, pool=pool)
            )
            self.user_id, self.profile, self.pool, self.ticket_id = user_id, profile, pool, ticket.pk
            self.joined_at = started
            self._set_state(WAITING)
            await self.send_json({"type": "match.waiting", "timeout_s": settings.MATCH_FALLBACK_SECONDS})
            self.fallback_task = asyncio.create_task(
                self._fallback(ticket.pk, started + settings.MATCH_FALLBACK_SECONDS)
            )
        await queue.departure_notify(departure)

    async def handle_message_send(self, content):
        if self.state == IDLE:
            raise ValidationFailed("Join the queue first (match.join).", code="not_joined")
        await arate_limit_hit(key=f"match-message:{self.user_id}", rate=Rate.parse(settings.MATCH_RATE_PER_USER))
        if self.state == ROOM:
            text = _text_clean(content.get("text"))
            client_id = content.get("client_id") or ""
            if not isinstance(client_id, str):
                raise ValidationFailed("client_id: must be a string.")
            # Stored first; acknowledged once relayed. If the relay fails (the channel
            # layer is down), the sender gets an error instead of the ack and may resend
            # with the same client_id: stored once, relayed again.
            message = await db(services.room_message_add)(
                room_id=self.room, user_id=self.user_id, text=text, client_id=client_id
            )
            await self.channel_layer.group_send(
                self.group,
                {
                    "type": "room.message",
                    "room": self.room,
                    "text": message.text,
                    "message_id": message.pk,
                    "sender": self.channel_name,
                },
            )
            await self.send_json({"type": "message.ack", "client_id": client_id or None, "message_id": message.pk})
            return
        if self.bot_conversation is None:
            raise ValidationFailed("Nobody is here yet: keep waiting.", code="not_connected")
        client_id = content.get("client_id") or ""
        stored = await db(conversation_services.message_user_add)(
            conversation=self.bot_conversation, text=content.get("text"), client_id=client_id
        )
        await self.send_json({"type": "message.ack", "client_id": client_id or None, "message_id": stored.message.pk})
        if stored.created:
            task = asyncio.create_task(self._answer(self.bot_conversation))
            self.answer_tasks.add(task)
            task.add_done_callback(self.answer_tasks.discard)

    async def handle_match_leave(self, content):
        async with self.state_lock:
            if self.state == IDLE:
                raise ValidationFailed("Not in the queue or a session.", code="not_joined")
            await self._quit(reason="left", peer_reason="peer_left")
            await self.send_json({"type": "session.ended", "reason": "left"})

    # --- events from the channel layer ----------------------------------------------
    async def match_paired(self, event):
        async with self.state_lock:
            if self.state != WAITING or event["ticket_id"] != self.ticket_id or event["room"] in self.dead_rooms:
                return  # for a ticket this socket no longer has
            self._cancel_fallback()
            if self.bot_conversation is not None:
                await self._end_bot(reason="handed_over")
                metrics.match_handovers.inc()
            self.room, self.group = event["room"], event["group"]
            self._set_state(ROOM)
            metrics.match_wait.observe(asyncio.get_running_loop().time() - self.joined_at)
            await self.send_json({"type": "match.found", "room": self.room, "peer": event["peer"]})

    async def match_room_ended(self, event):
        requeued = False
        async with self.state_lock:
            if self.state == ROOM and event["room"] == self.room:
                await self._quit(reason=event["reason"], peer_reason=event["reason"])
                await self.send_json({"type": "session.ended", "reason": event["reason"], "room": event["room"]})
            elif self.state == WAITING:
                # Our pairing has not reached us and the peer is gone already: wait on, in our place.
                self.dead_rooms.add(event["room"])
                requeued = await db(queue.ticket_requeue)(ticket_id=self.ticket_id, room_id=event["room"])
        if requeued:
            queue.pairing_kick(self.pool)

    async def match_replaced(self, event):
        async with self.state_lock:
            if self.state == IDLE:
                return
            # The new socket took over the ticket; the bot session was ended with it.
            self.ticket_id = None
            self.bot_conversation = None
            await self._quit(reason="replaced", peer_reason="peer_disconnected")
            await self.send_json({"type": "session.ended", "reason": "replaced"})
        await self.close(code=CLOSE_REPLACED)

    async def match_fallback(self, event):
        """The external matchmaker gave up (webhook): its session becomes this socket's bot."""
        async with self.state_lock:
            if self.state != WAITING or self.bot_conversation is not None or self.ticket_id is None:
                return
            conversation = await db(self._attach)(self.ticket_id, event["conversation_id"])
            if conversation is None:
                return
            self._cancel_fallback()
            await self._bot_connected(conversation)

    async def match_bot_ended(self, event):
        """The app ended this socket's bot session (sessions API): the user keeps waiting."""
        async with self.state_lock:
            conversation = self.bot_conversation
            if conversation is None or conversation.pk != event["conversation_id"]:
                return  # ended by this socket itself, or another session
            await self._cancel_answers()
            self.bot_conversation = None
            self._set_state(self.state)
            await self.send_json(
                {"type": "session.ended", "reason": event["reason"], "conversation_id": conversation.pk}
            )

    async def room_message(self, event):
        if event["sender"] != self.channel_name and self.state == ROOM and event["room"] == self.room:
            await self.send_json(
                {"type": "message", "from": "peer", "text": event["text"], "message_id": event.get("message_id")}
            )

    # --- internals ------------------------------------------------------------------
    async def _fallback(self, ticket_id: int, deadline: float):
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        async with self.state_lock:
            if self.state != WAITING or self.ticket_id != ticket_id or self.bot_conversation is not None:
                return
            try:
                conversation = await services.bot_start(ticket_id=ticket_id, user_id=self.user_id, profile=self.profile)
            except ChatbaseError as exc:
                await self.send_error(exc)
                return
            if conversation is None:
                return  # paired meanwhile: match.found is on its way
            metrics.match_fallback_lateness.observe(max(0.0, loop.time() - deadline))
            metrics.match_fallbacks.labels("timer").inc()
            await self._bot_connected(conversation)

    @staticmethod
    def _attach(ticket_id: int, conversation_id: int) -> Conversation | None:
        conversation = Conversation.objects.select_related("bot", "template").filter(pk=conversation_id).first()
        if conversation is None or not queue.ticket_bot_attach(ticket_id=ticket_id, conversation=conversation):
            return None
        return conversation

    async def _bot_connected(self, conversation: Conversation):
        self.bot_conversation = conversation
        self._set_state(WAITING)
        await self.send_json(
            {
                "type": "bot.connected",
                "conversation_id": conversation.pk,
                "template": conversation.template.slug if conversation.template else None,
                "welcome": services.session_welcome(conversation),
            }
        )

    async def _end_bot(self, *, reason: str):
        """Stop the bot's answer (its partial text is kept) and end its session."""
        conversation = self.bot_conversation
        await self._cancel_answers()
        await db(services.session_end)(conversation=conversation, reason=reason)
        await db(queue.ticket_bot_detach)(ticket_id=self.ticket_id)
        self.bot_conversation = None
        self._set_state(self.state)
        await self.send_json({"type": "session.ended", "reason": reason, "conversation_id": conversation.pk})

    async def _quit(self, *, reason: str, peer_reason: str):
        """Leave the queue or the room (the caller holds state_lock)."""
        self._cancel_fallback()
        await self._cancel_answers()
        if self.ticket_id is not None:
            departure = await db(queue.ticket_leave)(ticket_id=self.ticket_id, reason=reason, peer_reason=peer_reason)
            await queue.departure_notify(departure)
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.ticket_id, self.room, self.group, self.bot_conversation = None, None, None, None
        self._set_state(IDLE)

    def _cancel_fallback(self):
        if self.fallback_task is not None and self.fallback_task is not asyncio.current_task():
            self.fallback_task.cancel()
        self.fallback_task = None

    async def _cancel_answers(self):
        for task in list(self.answer_tasks):
            task.cancel()
        if self.answer_tasks:
            await asyncio.wait(self.answer_tasks, timeout=CANCEL_GRACE_SECONDS)

    _gauges = (False, False, False)

    def _set_state(self, state: str):
        """Move to `state` and keep this socket's share of the gauges right."""
        self.state = state
        now = (state == WAITING, state == WAITING and self.bot_conversation is not None, state == ROOM)
        before = self._gauges
        if now[0] != before[0]:
            metrics.match_waiting.inc(1 if now[0] else -1)
        if now[1] != before[1]:
            metrics.match_active_sessions.labels("bot").inc(1 if now[1] else -1)
        if now[2] != before[2]:
            metrics.match_active_sessions.labels("human").inc(0.5 if now[2] else -0.5)
        self._gauges = now

    async def _answer(self, conversation: Conversation):
        async with self.answer_lock:
            try:
                async for frame, message in answer_frames(conversation=conversation):
                    await self.send_json(frame)
                    if message is not None:
                        await self.send_json(
                            {"type": "message", "from": "bot", "text": message.text, "message_id": message.pk}
                        )
            except asyncio.CancelledError:
                raise
            except ChatbaseError as exc:
                await self.send_error(exc)
            except Exception as exc:  # the socket stays usable; the user is told
                logger.exception("Answering in matchmaking session %s failed", conversation.pk)
                await self.send_error(exc)
