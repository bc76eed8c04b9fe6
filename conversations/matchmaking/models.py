"""The matchmaking queue and human rooms (imported by conversations.models)."""

from __future__ import annotations

import uuid

from django.db import models


class MatchTicket(models.Model):
    """One open /ws/match/ socket of a user who joined: waiting, or in a human room.

    The row is the queue. A user has at most one ticket (a second join replaces the
    first). Every process refreshes the heartbeat of its own tickets; a ticket whose
    heartbeat is stale belongs to a process that died and is never paired (the beat
    task deletes it).
    """

    user_id = models.CharField(max_length=200, unique=True)
    channel_name = models.CharField(max_length=200)
    # Which process holds the socket (its heartbeat refreshes the ticket).
    instance = models.CharField(max_length=64, db_index=True)
    # Users are only paired within a pool (a language, a region, an app); "" is the common pool.
    pool = models.CharField(max_length=50, blank=True, default="")
    profile = models.JSONField(default=dict, blank=True)
    # Set when paired; a ticket without a room is waiting (even while a bot keeps it company).
    room = models.ForeignKey("MatchRoom", null=True, blank=True, on_delete=models.SET_NULL, related_name="tickets")
    bot_conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    joined_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The pairing scan: the oldest waiting tickets of a pool.
            models.Index(
                fields=["pool", "joined_at", "id"], condition=models.Q(room__isnull=True), name="match_waiting"
            ),
            models.Index(fields=["heartbeat_at"], name="match_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} ({'in a room' if self.room_id else 'waiting'})"


class MatchRoom(models.Model):
    """Two users paired by the queue. Their messages are stored (MatchMessage), then relayed
    through the channel layer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_a = models.CharField(max_length=200)
    user_b = models.CharField(max_length=200)
    pool = models.CharField(max_length=50, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["ended_at"], name="match_room_open")]

    def __str__(self) -> str:
        return f"Room {self.user_a} + {self.user_b}"

    @property
    def group(self) -> str:
        return f"match.room.{self.pk.hex}"


class MatchMessage(models.Model):
    """What one human wrote to the other in a room: kept for moderation and abuse reports
    (the app's users may report each other), stored before it is relayed."""

    room = models.ForeignKey(MatchRoom, on_delete=models.CASCADE, related_name="messages")
    user_id = models.CharField(max_length=200)
    text = models.TextField()
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["room", "created_at"], name="match_message_room")]
        constraints = [
            # A resend (same client_id) is stored once.
            models.UniqueConstraint(
                fields=["room", "user_id", "client_id"],
                condition=~models.Q(client_id=""),
                name="match_message_once_per_client_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.text[:40]}"
