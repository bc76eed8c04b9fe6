"""Conversations (sessions) and their messages."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.db import models

from bots.models import Bot, PromptTemplate


class Conversation(models.Model):
    class Channel(models.TextChoices):
        WIDGET = "widget", "Website widget"
        API = "api", "REST API"
        MATCHMAKING = "matchmaking", "Matchmaking"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ENDED = "ended", "Ended"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="conversations")
    # Who is talking: a widget visitor's id (from their signed token), "user:<id>" for a
    # site user verified by identity hash or an external app's user, "owner:<id>" for
    # an owner testing over the API.
    visitor_id = models.CharField(max_length=200, db_index=True)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.WIDGET)
    template = models.ForeignKey(PromptTemplate, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    end_reason = models.CharField(max_length=50, blank=True)
    # {name, age, interests, mood, topics, ...} from the visitor or the external app.
    profile = models.JSONField(default=dict, blank=True)
    # Client facts kept for leads and analytics: anonymised IP, origin, user agent.
    metadata = models.JSONField(default=dict, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    # Rolling summary of the messages older than the verbatim history window.
    summary = models.TextField(blank=True)
    summary_message_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    last_activity_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_activity_at", "-id"]
        indexes = [
            models.Index(fields=["bot", "visitor_id", "-last_activity_at"], name="conv_bot_visitor"),
            models.Index(fields=["status", "last_activity_at"], name="conv_status_activity"),
            models.Index(fields=["bot", "-started_at"], name="conv_bot_started"),
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk} with {self.visitor_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        SYSTEM = "system", "System"
        TOOL = "tool", "Tool"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField()
    # [{document_id, document_title, url, snippet, chunk_id, score}]
    sources = models.JSONField(default=list, blank=True)
    # Every provider that contributed text, in order (a mid-answer fallback lists two).
    providers = ArrayField(models.CharField(max_length=30), default=list, blank=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    # The answer stopped early: the visitor left, the token limit, or every provider failed.
    incomplete = models.BooleanField(default=False)
    # The sender's id for this message: a resend after a reconnect is stored once.
    client_id = models.CharField(max_length=64, blank=True)
    # Who spoke in a human room (matchmaking): "peer" messages are not the bot's.
    sender = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"], name="message_conversation_time")]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=~models.Q(client_id=""),
                name="message_client_id_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"

    @property
    def provider(self) -> str:
        return self.providers[-1] if self.providers else ""


# The matchmaking models live in their own module; Django finds them through this import.
from conversations.matchmaking.models import MatchMessage, MatchRoom, MatchTicket  # noqa: E402, F401
