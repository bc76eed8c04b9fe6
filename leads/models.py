"""Leads: people who showed buying intent, with an explainable score and where they are."""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models.functions import Lower

from bots.models import Bot
from conversations.models import Conversation, Message
from geo.models import ServiceArea


class Lead(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        QUALIFIED = "qualified", "Qualified"
        CONTACTED = "contacted", "Contacted"
        WON = "won", "Won"
        LOST = "lost", "Lost"

    class Source(models.TextChoices):
        WIDGET = "widget", "Widget chat"
        FORM = "form", "Lead form"
        API = "api", "API"
        MATCHMAKING = "matchmaking", "Matchmaking"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="leads")
    conversations = models.ManyToManyField(Conversation, related_name="leads", blank=True)
    # Unique per bot, case-insensitively, when present (see Meta); a lead may start
    # without one (buying intent from an anonymous visitor) and gain it later.
    email = models.EmailField(max_length=254, blank=True)
    name = models.CharField(max_length=200, blank=True)
    # E.164 (+919876543210), normalised by the phonenumbers library.
    phone = models.CharField(max_length=20, blank=True)
    company = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    score = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    # [{"marker", "points", "evidence"}]: every line that makes up the score.
    score_breakdown = models.JSONField(default=list, blank=True)
    consent = models.BooleanField(default=False)
    consent_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.WIDGET)
    # Network address of the visitor's /24 (IPv4) or /48 (IPv6); never the full address.
    ip_anonymised = models.GenericIPAddressField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True)
    region = models.CharField(max_length=100, blank=True)
    city = models.CharField(max_length=100, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    nearest_area = models.ForeignKey(
        ServiceArea, null=True, blank=True, on_delete=models.SET_NULL, related_name="leads"
    )
    distance_km = models.FloatField(null=True, blank=True)
    hubspot_id = models.CharField(max_length=50, blank=True, db_index=True)
    qualified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                "bot", Lower("email"), condition=~models.Q(email=""), name="lead_email_unique_per_bot"
            ),
            models.CheckConstraint(condition=models.Q(score__lte=100), name="lead_score_at_most_100"),
        ]
        indexes = [
            models.Index(fields=["bot", "-created_at"], name="lead_bot_created"),
            models.Index(fields=["bot", "status", "-score"], name="lead_bot_status_score"),
            models.Index(fields=["bot", "phone"], name="lead_bot_phone"),
        ]

    def __str__(self) -> str:
        return self.email or self.phone or self.name or f"Lead {self.pk}"

    @property
    def inside_service_area(self) -> bool:
        return (
            self.nearest_area is not None
            and self.distance_km is not None
            and self.distance_km <= self.nearest_area.radius_km
        )


class LeadScoreEvent(models.Model):
    """One change of one marker's points: the score's history."""

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="score_events")
    marker = models.CharField(max_length=50)
    # How many points this marker's contribution changed by (negative when it went away).
    points = models.SmallIntegerField()
    evidence = models.CharField(max_length=500, blank=True)
    # The message that made the marker fire, when it was a message.
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The lead's score after this change.
    score_after = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["lead", "created_at"], name="lead_score_event_time")]

    def __str__(self) -> str:
        return f"{self.marker} {self.points:+d}"
