"""The waiting queue, in PostgreSQL so that every Daphne process shares it.

Joining inserts (and commits) the user's ticket; the joins of one moment in a
process share one transaction (batching.Coalescer). Then the process's pairer of
that pool pairs whatever is pairable: one transaction locks the oldest waiting
tickets with `FOR UPDATE SKIP LOCKED` and puts them two by two in new rooms. Two
concurrent pairers never lock the same ticket, so nobody is paired twice. A pairer
that finds fewer than two unlocked tickets while two or more are waiting (the others
are locked by concurrent pairers, who may release one each) tries again after a
short random pause, until at most one ticket of the pool is waiting: two waiting
users are never left unpaired, whoever joined last sees the other (its ticket was
committed before it looked).

Everything here is synchronous ORM code run in worker threads; the consumer sends
the notifications (`match.paired`, `match.room_ended`) through the channel layer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from chatbase.core import metrics
from conversations import services as conversation_services
from conversations.matchmaking.batching import Coalescer
from conversations.matchmaking.models import MatchRoom, MatchTicket
from conversations.models import Conversation

logger = logging.getLogger(__name__)

# This process: its heartbeat keeps its tickets alive.
INSTANCE = uuid.uuid4().hex
# Matchmaking's database work runs on a few threads of its own, not Daphne's single
# thread-sensitive one: a burst of joins, fallbacks and pairings must not queue behind
# every other consumer's calls (nor they behind it). Each thread keeps one pooled connection.
_executor = ThreadPoolExecutor(max_workers=settings.MATCH_DB_THREADS, thread_name_prefix="matchmaking-db")


def db(function):
    """`function` as a coroutine on the matchmaking threads (connections handled as Channels does)."""
    return database_sync_to_async(function, thread_sensitive=False, executor=_executor)


# A pairer retries while others hold locks; the pauses grow to at most this long.
PAIR_RETRY_MAX_SECONDS = 0.05
PAIR_MAX_ATTEMPTS = 200


@dataclass(frozen=True)
class Seat:
    """One side of a pairing, as the other side's consumer needs it."""

    ticket_id: int
    user_id: str
    channel_name: str
    name: str
    joined_at: datetime


@dataclass(frozen=True)
class Pairing:
    room_id: str
    group: str
    seats: tuple[Seat, Seat]


@dataclass
class Departure:
    """What a removed ticket leaves behind: whom to tell, and what."""

    room_id: str | None = None
    # The other side of the ended room, told with `peer_reason`.
    peers: list[str] = field(default_factory=list)
    peer_reason: str = "peer_left"
    bot_conversation_id: int | None = None
    # The socket whose ticket a new join replaced (it is told and closed).
    replaced_channel: str | None = None


def display_name(profile: dict) -> str:
    name = profile.get("name")
    return str(name)[:80] if name not in (None, "") else "Someone"


def _seat(ticket: MatchTicket) -> Seat:
    return Seat(
        ticket_id=ticket.pk,
        user_id=ticket.user_id,
        channel_name=ticket.channel_name,
        name=display_name(ticket.profile),
        joined_at=ticket.joined_at,
    )


def _fresh_after(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.MATCH_TICKET_STALE_SECONDS)


def waiting_tickets(*, pool: str, now: datetime | None = None) -> QuerySet[MatchTicket]:
    """Tickets of a pool that may be paired: no room yet, and their process is alive."""
    now = now or timezone.now()
    return MatchTicket.objects.filter(pool=pool, room__isnull=True, heartbeat_at__gte=_fresh_after(now))


@dataclass(frozen=True)
class JoinRequest:
    user_id: str
    channel_name: str
    profile: dict
    pool: str = ""
    bot_conversation_id: int | None = None


def tickets_join(requests: Sequence[JoinRequest]) -> list[tuple[MatchTicket, Departure | None]]:
    """Queue the users (in one transaction; the caller holds it). A ticket a user
    already had (another socket, or a crashed process's) is replaced: the Departure
    says whom to tell. The same user twice in one batch: the later socket wins."""
    latest = {request.user_id: request for request in requests}
    if len(latest) < len(requests):
        # Rare (two sockets of one user in the same instant): one after the other.
        return [result for request in requests for result in tickets_join([request])]
    departures: dict[str, Departure] = {}
    for old in MatchTicket.objects.select_for_update().filter(user_id__in=list(latest)).order_by("pk"):
        departure = _ticket_remove(old, reason="replaced", peer_reason="peer_disconnected")
        departure.replaced_channel = old.channel_name
        departures[old.user_id] = departure
    now = timezone.now()
    tickets = MatchTicket.objects.bulk_create(
        MatchTicket(
            user_id=request.user_id,
            channel_name=request.channel_name,
            instance=INSTANCE,
            pool=request.pool,
            profile=request.profile,
            bot_conversation_id=request.bot_conversation_id,
            joined_at=now,
            heartbeat_at=now,
        )
        for request in requests
    )
    return [(ticket, departures.get(ticket.user_id)) for ticket in tickets]


async def join(request: JoinRequest) -> tuple[MatchTicket, Departure | None]:
    """Queue a user, in one transaction with every other join of this moment in this
    process; then this process's pairer of the pool runs."""
    try:
        ticket, departure, waiting = await _joins.submit(request)
    except IntegrityError:
        # The same user was queued by another process at the same moment: replace it.
        ticket, departure = await db(ticket_join)(
            user_id=request.user_id,
            channel_name=request.channel_name,
            profile=request.profile,
            pool=request.pool,
            bot_conversation_id=request.bot_conversation_id,
        )
        waiting = 2
    # Counted after the commit: of two users joining one pool at once (any process),
    # whoever counts last sees both, and pairs them.
    if waiting >= 2:
        pairing_kick(ticket.pool)
    return ticket, departure


def _waiting_counted(requests, results):
    """After the joins committed: each with how many wait in its pool (2 when the count
    fails: the pairer then looks for itself; never re-run the committed joins)."""
    pools = {ticket.pool for ticket, _ in results}
    try:
        counts = dict(
            MatchTicket.objects.filter(
                pool__in=pools, room__isnull=True, heartbeat_at__gte=_fresh_after(timezone.now())
            )
            .values_list("pool")
            .annotate(waiting=Count("pk"))
            .order_by()
        )
    except DatabaseError:
        logger.warning("counting the waiting tickets failed; pairing anyway", exc_info=True)
        counts = dict.fromkeys(pools, 2)
    return [(ticket, departure, counts.get(ticket.pool, 0)) for ticket, departure in results]


def ticket_join(
    *, user_id: str, channel_name: str, profile: dict, pool: str = "", bot_conversation_id: int | None = None
) -> tuple[MatchTicket, Departure | None]:
    """Queue one user (see tickets_join)."""
    request = JoinRequest(user_id, channel_name, profile, pool, bot_conversation_id)
    for _ in range(3):
        try:
            with transaction.atomic():
                return tickets_join([request])[0]
        except IntegrityError:
            continue  # the same user joined at the same moment elsewhere: replace that one
    raise IntegrityError(f"Could not queue {user_id!r}: it keeps being queued concurrently.")


# Pairs formed in one transaction at most.
PAIR_BATCH = 50


_joins: Coalescer[JoinRequest, tuple[MatchTicket, Departure | None, int]] = Coalescer(
    tickets_join, run=db, then=_waiting_counted
)


@transaction.atomic
def _pairs_make(*, pool: str) -> list[Pairing]:
    tickets = list(
        waiting_tickets(pool=pool)
        .order_by("joined_at", "id")
        .select_for_update(skip_locked=True, of=("self",))[: 2 * PAIR_BATCH]
    )
    pairs = list(zip(tickets[0::2], tickets[1::2], strict=False))
    if not pairs:
        return []
    rooms = MatchRoom.objects.bulk_create(MatchRoom(user_a=a.user_id, user_b=b.user_id, pool=pool) for a, b in pairs)
    for (first, second), room in zip(pairs, rooms, strict=True):
        first.room = second.room = room
    MatchTicket.objects.bulk_update([ticket for pair in pairs for ticket in pair], ["room"])
    return [
        Pairing(room_id=str(room.pk), group=room.group, seats=(_seat(first), _seat(second)))
        for (first, second), room in zip(pairs, rooms, strict=True)
    ]


def pairs_make(*, pool: str) -> tuple[list[Pairing], int]:
    """Pair the pool's oldest unlocked waiting tickets, two by two, in joining order
    (up to PAIR_BATCH pairs); if none, say how many are waiting."""
    pairings = _pairs_make(pool=pool)
    if pairings:
        return pairings, 0
    return [], waiting_tickets(pool=pool).count()


async def pairs_claim(*, pool: str) -> list[Pairing]:
    """Pair the pool's waiting tickets, oldest first, until at most one is waiting."""
    pairings: list[Pairing] = []
    attempt = 0
    while attempt < PAIR_MAX_ATTEMPTS:
        made, waiting = await db(pairs_make)(pool=pool)
        if made:
            pairings.extend(made)
            attempt = 0
            continue
        if waiting < 2:
            break
        # Two or more wait but were locked: by pairers that will pair them, or that
        # will each release one. Look again shortly; random pauses break the tie.
        attempt += 1
        await asyncio.sleep(random.uniform(0.001, min(PAIR_RETRY_MAX_SECONDS, 0.002 * attempt)))
    return pairings


class _Pairer:
    """One pairing task per pool in each process, however many sockets just joined.

    Each join used to run its own pairing transaction, all contending for the same
    rows. A join now asks this process's pairer of its pool to run (again, if it is
    running: a ticket committed after its last look must be seen); processes still
    contend with each other, which SKIP LOCKED and the retries above resolve.
    """

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()

    def kick(self, pool: str) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._tasks, self._again = loop, {}, set()
        task = self._tasks.get(pool)
        if task is not None and not task.done():
            self._again.add(pool)
            return task
        task = self._tasks[pool] = loop.create_task(self._run(pool))
        return task

    async def _run(self, pool: str) -> None:
        while True:
            self._again.discard(pool)
            try:
                pairings = await pairs_claim(pool=pool)
                if pairings:
                    metrics.match_pairs.inc(len(pairings))
                    outcomes = await asyncio.gather(
                        *(pairing_announce(pairing) for pairing in pairings), return_exceptions=True
                    )
                    for pairing, outcome in zip(pairings, outcomes, strict=True):
                        if isinstance(outcome, Exception):
                            await _pairing_undo(pairing, outcome)
            except Exception:
                # The tickets stay waiting: the next join, or the heartbeat's
                # pools_pairable() check, pairs them.
                logger.exception("pairing in pool %r failed", pool)
            if pool not in self._again:
                return


pairer = _Pairer()


async def _pairing_undo(pairing: Pairing, error: Exception) -> None:
    """Neither side may have heard of a room whose announcement failed (the channel layer
    was away): both go back to waiting in their places, and the heartbeat's
    pools_pairable() pairs them again."""
    logger.warning("announcing room %s failed (%s); both wait again", pairing.room_id, error)
    for seat in pairing.seats:
        await db(ticket_requeue)(ticket_id=seat.ticket_id, room_id=pairing.room_id)
    await db(room_abandon)(room_id=pairing.room_id)


def pools_pairable() -> list[str]:
    """Pools where two or more tickets wait: a pairing that failed (the database was
    away) left them so, and no join in that pool may come to retry it."""
    return list(
        MatchTicket.objects.filter(room__isnull=True, heartbeat_at__gte=_fresh_after(timezone.now()))
        .values("pool")
        .annotate(waiting=Count("pk"))
        .filter(waiting__gte=2)
        .order_by("pool")
        .values_list("pool", flat=True)
    )


def pairing_kick(pool: str) -> asyncio.Task:
    """Have this process pair the pool's waiting tickets (soon, once)."""
    return pairer.kick(pool)


def _ticket_remove(ticket: MatchTicket, *, reason: str, peer_reason: str) -> Departure:
    """Delete a locked ticket; its room ends and so does its bot session."""
    departure = Departure(bot_conversation_id=ticket.bot_conversation_id, peer_reason=peer_reason)
    if ticket.room_id is not None:
        departure.room_id = str(ticket.room_id)
        # Not locked: two users leaving their room at once must not wait for each other.
        # Each peer removes its own ticket when told (or the sweep does, if it is a ghost).
        peers = MatchTicket.objects.filter(room_id=ticket.room_id).exclude(pk=ticket.pk)
        departure.peers = list(peers.values_list("channel_name", flat=True))
        MatchRoom.objects.filter(pk=ticket.room_id, ended_at__isnull=True).update(
            ended_at=timezone.now(), end_reason=reason[:50]
        )
    if ticket.bot_conversation_id is not None:
        conversation = Conversation.objects.filter(pk=ticket.bot_conversation_id).first()
        if conversation is not None:
            conversation_services.conversation_end(conversation=conversation, reason=reason)
    ticket.delete()
    return departure


@transaction.atomic
def ticket_leave(*, ticket_id: int, reason: str, peer_reason: str = "peer_left") -> Departure | None:
    """The user left (or disconnected): None if their ticket was already gone."""
    # Blocks while a pairer holds the ticket: then the room it made is ended here.
    ticket = MatchTicket.objects.select_for_update().filter(pk=ticket_id).first()
    if ticket is None:
        return None
    return _ticket_remove(ticket, reason=reason, peer_reason=peer_reason)


@transaction.atomic
def ticket_bot_attach(*, ticket_id: int, conversation: Conversation) -> bool:
    """Give a waiting ticket its bot session; False if it was paired or is gone meanwhile."""
    return bool(
        MatchTicket.objects.filter(pk=ticket_id, room__isnull=True, bot_conversation__isnull=True).update(
            bot_conversation=conversation
        )
    )


@transaction.atomic
def ticket_bot_detach(*, ticket_id: int) -> None:
    MatchTicket.objects.filter(pk=ticket_id).update(bot_conversation=None)


def tickets_heartbeat(*, instance: str = INSTANCE) -> int:
    return MatchTicket.objects.filter(instance=instance).update(heartbeat_at=timezone.now())


def tickets_stale(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or timezone.now()
    return list(
        MatchTicket.objects.filter(heartbeat_at__lt=_fresh_after(now))
        .order_by("heartbeat_at")
        .values_list("pk", flat=True)[:limit]
    )


@transaction.atomic
def ticket_remove_if_stale(*, ticket_id: int, now: datetime | None = None) -> Departure | None:
    """A ghost (its process died): removed, unless its process came back meanwhile.

    Skips a ticket another cleaner holds, so several processes may clean at once."""
    now = now or timezone.now()
    ticket = (
        MatchTicket.objects.select_for_update(skip_locked=True)
        .filter(pk=ticket_id, heartbeat_at__lt=_fresh_after(now))
        .first()
    )
    if ticket is None:
        return None
    return _ticket_remove(ticket, reason="abandoned", peer_reason="peer_disconnected")


def live_ticket_for_user(*, user_id: str) -> MatchTicket | None:
    """The user's ticket if their socket is open with us (its process is alive)."""
    return MatchTicket.objects.filter(user_id=user_id, heartbeat_at__gte=_fresh_after(timezone.now())).first()


async def departure_notify(departure: Departure | None) -> None:
    """Tell the other side of an ended room, and a replaced socket (low-rate channel-layer events)."""
    if departure is None:
        return
    layer = get_channel_layer()
    for channel in departure.peers:
        await layer.send(
            channel, {"type": "match.room_ended", "room": departure.room_id, "reason": departure.peer_reason}
        )
    if departure.replaced_channel:
        await layer.send(departure.replaced_channel, {"type": "match.replaced"})


def departure_notify_after_commit(departure: Departure | None) -> None:
    """From synchronous code (the beat, a webhook): notify once the removal is committed."""
    if departure is not None:
        transaction.on_commit(lambda: async_to_sync(departure_notify)(departure), robust=True)


@transaction.atomic
def room_abandon(*, room_id: str) -> None:
    """A room nobody was told of, its tickets requeued: closed, not left open."""
    MatchRoom.objects.filter(pk=room_id, ended_at__isnull=True).exclude(tickets__isnull=False).update(
        ended_at=timezone.now(), end_reason="not_announced"
    )


@transaction.atomic
def ticket_requeue(*, ticket_id: int, room_id: str) -> bool:
    """Back to waiting (keeping its place) a ticket whose room ended before its socket
    heard of the pairing: the peer left within that instant."""
    return bool(MatchTicket.objects.filter(pk=ticket_id, room_id=room_id).update(room=None))


async def pairing_announce(pairing: Pairing) -> None:
    """Both sockets join the room's group before either hears of it, then each is told."""
    layer = get_channel_layer()
    first, second = pairing.seats
    for seat in pairing.seats:
        await layer.group_add(pairing.group, seat.channel_name)
    for seat, other in ((first, second), (second, first)):
        await layer.send(
            seat.channel_name,
            {
                "type": "match.paired",
                "room": pairing.room_id,
                "group": pairing.group,
                "ticket_id": seat.ticket_id,
                "peer": {"name": other.name},
            },
        )
