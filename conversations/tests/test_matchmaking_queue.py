"""The PostgreSQL queue under real concurrency (threads, each with its own connection)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from conversations.matchmaking import queue, services
from conversations.matchmaking.models import MatchRoom, MatchTicket
from conversations.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    # Notifications here run on throwaway loops (async_to_sync): never reuse a layer bound to another.
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def in_threads(count, target):
    """Run target(i) in `count` threads released at the same moment."""
    barrier = threading.Barrier(count)
    errors = []

    def run(i):
        try:
            barrier.wait()
            target(i)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors


def test_concurrent_joiners_pair_everyone_once():
    pairings = []

    def join_and_pair(i):
        queue.ticket_join(user_id=f"u{i}", channel_name=f"chan{i}", profile={"name": f"U{i}"})
        pairings.extend(asyncio.run(queue.pairs_claim(pool="")))

    in_threads(24, join_and_pair)
    rooms = list(MatchRoom.objects.all())
    assert len(rooms) == len(pairings) == 12
    users = Counter(u for room in rooms for u in (room.user_a, room.user_b))
    assert set(users) == {f"u{i}" for i in range(24)} and set(users.values()) == {1}
    assert not MatchTicket.objects.filter(room__isnull=True).exists()
    for pairing in pairings:
        first, second = pairing.seats
        assert first.user_id != second.user_id
        assert {first.ticket_id, second.ticket_id} == set(
            MatchTicket.objects.filter(room_id=pairing.room_id).values_list("pk", flat=True)
        )


def test_an_odd_user_out_keeps_waiting_oldest_first():
    for i in range(3):
        queue.ticket_join(user_id=f"u{i}", channel_name=f"chan{i}", profile={})
    (pairing,) = asyncio.run(queue.pairs_claim(pool=""))
    assert [s.user_id for s in pairing.seats] == ["u0", "u1"]
    assert list(MatchTicket.objects.filter(room__isnull=True).values_list("user_id", flat=True)) == ["u2"]


def test_a_ghost_is_never_paired_and_the_sweep_removes_it():
    ghost, _ = queue.ticket_join(user_id="ghost", channel_name="gone", profile={})
    MatchTicket.objects.filter(pk=ghost.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    queue.ticket_join(user_id="alive", channel_name="here", profile={})
    assert asyncio.run(queue.pairs_claim(pool="")) == []
    assert services.tickets_sweep() == 1
    assert list(MatchTicket.objects.values_list("user_id", flat=True)) == ["alive"]


def test_the_sweep_ends_a_ghosts_room_and_bot_session(django_capture_on_commit_callbacks):
    ghost, _ = queue.ticket_join(user_id="ghost", channel_name="gone", profile={})
    queue.ticket_join(user_id="peer", channel_name="peer-chan", profile={})
    (pairing,) = asyncio.run(queue.pairs_claim(pool=""))
    MatchTicket.objects.filter(pk=ghost.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    result = services.matchmaking_cleanup()
    assert result["tickets_removed"] == 1
    room = MatchRoom.objects.get(pk=pairing.room_id)
    assert room.ended_at is not None and room.end_reason == "abandoned"
    # The peer's socket removes its own ticket when told; it is not a ghost.
    assert list(MatchTicket.objects.values_list("user_id", flat=True)) == ["peer"]


def test_abandoned_sessions_end_and_attached_ones_do_not(settings):
    settings.MATCH_SESSION_END_AFTER_MINUTES = 30
    ticket, _ = queue.ticket_join(user_id="talking", channel_name="c", profile={})
    live = services.ticket_bot_start(ticket_id=ticket.pk, user_id="talking", profile={"name": "T"})
    orphan = services.session_start(user_id="gone", profile={}, source="api")
    old = timezone.now() - timedelta(hours=1)
    Conversation.objects.filter(pk__in=[live.pk, orphan.pk]).update(last_activity_at=old)
    assert services.matchmaking_cleanup()["sessions_ended"] == 1
    orphan.refresh_from_db()
    live.refresh_from_db()
    assert orphan.status == "ended" and orphan.end_reason == "abandoned"
    assert live.status == "active"


def test_the_fallback_does_not_start_for_a_paired_ticket():
    first, _ = queue.ticket_join(user_id="a", channel_name="ca", profile={})
    queue.ticket_join(user_id="b", channel_name="cb", profile={})
    asyncio.run(queue.pairs_claim(pool=""))
    assert services.ticket_bot_start(ticket_id=first.pk, user_id="a", profile={}) is None
    assert not Conversation.objects.exists()


def test_the_companion_bot_is_created_once():
    bots = []
    in_threads(4, lambda i: bots.append(services.matchmaking_bot().pk))
    assert len(set(bots)) == 1


# --- batches: the joins and pairings of one moment share a transaction ------------------


def test_a_batch_of_joins_replaces_old_tickets_and_keeps_order():
    old, _ = queue.ticket_join(user_id="u1", channel_name="old-socket", profile={})
    requests = [
        queue.JoinRequest(user_id="u1", channel_name="new-socket", profile={"name": "One"}),
        queue.JoinRequest(user_id="u2", channel_name="c2", profile={}),
        queue.JoinRequest(user_id="u3", channel_name="c3", profile={}, pool="other"),
    ]
    with transaction.atomic():
        results = queue.tickets_join(requests)
    assert [ticket.user_id for ticket, _ in results] == ["u1", "u2", "u3"]
    assert results[0][1].replaced_channel == "old-socket" and results[1][1] is None
    assert not MatchTicket.objects.filter(pk=old.pk).exists()
    assert MatchTicket.objects.get(user_id="u1").channel_name == "new-socket"
    assert MatchTicket.objects.get(user_id="u3").pool == "other"


def test_the_same_user_twice_in_a_batch_keeps_the_later_socket():
    requests = [queue.JoinRequest(user_id="u1", channel_name=f"socket-{i}", profile={}) for i in range(2)]
    with transaction.atomic():
        _, (ticket, departure) = queue.tickets_join(requests)
    assert departure.replaced_channel == "socket-0"
    assert list(MatchTicket.objects.values_list("pk", "channel_name")) == [(ticket.pk, "socket-1")]


def test_one_transaction_pairs_many_in_joining_order():
    for i in range(7):
        queue.ticket_join(user_id=f"u{i}", channel_name=f"c{i}", profile={})
    pairings, waiting = queue.pairs_make(pool="")
    assert [(p.seats[0].user_id, p.seats[1].user_id) for p in pairings] == [("u0", "u1"), ("u2", "u3"), ("u4", "u5")]
    assert waiting == 0 and MatchRoom.objects.count() == 3
    assert list(MatchTicket.objects.filter(room__isnull=True).values_list("user_id", flat=True)) == ["u6"]
    assert queue.pairs_make(pool="") == ([], 1)


def test_a_coalescer_batches_what_waits_and_fails_only_the_bad_item():
    from conversations.matchmaking.batching import Coalescer

    batches = []

    def create(items):
        batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [MatchRoom.objects.create(user_a=item, user_b=item).user_a for item in items]

    followed = []

    def then(items, results):
        # After the commit, once, for the items that succeeded: never a reason to redo them.
        followed.append((list(items), MatchRoom.objects.filter(user_a__in=items).count()))
        return [f"{result}!" for result in results]

    coalescer = Coalescer(create, run=queue.db, then=then)

    async def scenario():
        return await asyncio.gather(
            *(coalescer.submit(item) for item in ["a", "b", "bad", "c"]), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert results[:2] == ["a!", "b!"] and isinstance(results[2], ValueError) and results[3] == "c!"
    assert followed == [(["a", "b", "c"], 3)]
    # One batch for the four; it failed, so each was tried alone (in its own transaction).
    assert batches == [["a", "b", "bad", "c"], ["a"], ["b"], ["bad"], ["c"]]
    assert sorted(MatchRoom.objects.values_list("user_a", flat=True)) == ["a", "b", "c"]


def test_fallbacks_due_together_start_in_one_transaction_except_for_the_paired():
    waiting = [queue.ticket_join(user_id=f"w{i}", channel_name=f"c{i}", profile={"name": f"W{i}"})[0] for i in range(3)]
    queue.ticket_join(user_id="x", channel_name="cx", profile={})
    MatchTicket.objects.filter(pk=waiting[1].pk).update(room=MatchRoom.objects.create(user_a="w1", user_b="x"))
    requests = [services.FallbackRequest(t.pk, t.user_id, t.profile) for t in waiting]
    with transaction.atomic():
        sessions = services.tickets_bot_start(requests)
    assert sessions[1] is None and sessions[0] and sessions[2]
    assert sessions[0].profile == {"name": "W0"} and sessions[0].visitor_id == "user:w0"
    attached = dict(MatchTicket.objects.filter(user_id__startswith="w").values_list("user_id", "bot_conversation_id"))
    assert attached == {"w0": sessions[0].pk, "w1": None, "w2": sessions[2].pk}


def test_a_message_to_an_ended_room_is_refused_and_not_stored():
    from chatbase.core.errors import ValidationFailed
    from conversations.matchmaking.models import MatchMessage

    room = MatchRoom.objects.create(user_a="a", user_b="b")
    services.room_message_add(room_id=str(room.pk), user_id="a", text="hi")
    MatchRoom.objects.filter(pk=room.pk).update(ended_at=timezone.now(), end_reason="peer_left")
    with pytest.raises(ValidationFailed) as refused:
        services.room_message_add(room_id=str(room.pk), user_id="a", text="still there?")
    assert refused.value.code == "room_ended"
    assert list(MatchMessage.objects.values_list("text", flat=True)) == ["hi"]


def test_staff_read_a_rooms_messages_under_it_in_admin_and_cannot_edit_them(admin_client):
    room = MatchRoom.objects.create(user_a="alice", user_b="bob")
    services.room_message_add(room_id=str(room.pk), user_id="alice", text="you are rude")
    page = admin_client.get(f"/admin/conversations/matchroom/{room.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "you are rude" in html and "alice" in html
    assert 'name="messages-0-text"' not in html  # shown, not an editable field
