from django.conf import settings
from django.db import models

from crm.crypto import EncryptedTextField


class WebhookEvent(models.Model):
    """Every inbound webhook event we accepted, one row per (source, event id).

    The unique constraint is what makes a replay a no-op: the view records the event
    and enqueues processing only when the row is new, so a provider retrying a
    delivery (or an attacker replaying a captured one) is answered 200 and ignored.
    """

    class Source(models.TextChoices):
        HUBSPOT = "hubspot", "HubSpot"
        GMAIL = "gmail", "Gmail"
        CALENDAR = "calendar", "Google Calendar"
        MATCHMAKING = "matchmaking", "Matchmaking"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    source = models.CharField(max_length=20, choices=Source.choices)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="crm_webhookevent_unique_per_source")
        ]
        indexes = [models.Index(fields=["status", "received_at"])]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.source}:{self.event_type or '?'}:{self.event_id}"


class HubSpotConnection(models.Model):
    """An owner's link to their HubSpot account.

    With HUBSPOT_ACCESS_TOKEN set (a private app) every owner uses that token and the
    row only keeps the state (portal, last error, custom properties created). An OAuth
    connection stores its tokens encrypted and refreshes them before they expire.
    """

    class AuthType(models.TextChoices):
        PRIVATE_APP = "private_app", "Private app token"
        OAUTH = "oauth", "OAuth"

    class Status(models.TextChoices):
        CONNECTED = "connected", "Connected"
        ERROR = "error", "Error"
        DISCONNECTED = "disconnected", "Disconnected"

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="hubspot_connection")
    auth_type = models.CharField(max_length=20, choices=AuthType.choices, default=AuthType.OAUTH)
    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    portal_id = models.CharField(max_length=40, blank=True, db_index=True)
    scopes = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CONNECTED)
    last_error = models.TextField(blank=True)
    # The custom contact properties (score, nearest area) exist in the portal.
    properties_ready = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "HubSpot connection"

    def __str__(self) -> str:
        return f"HubSpot ({self.get_auth_type_display()}) of {self.owner}"


class MemoryRule(models.Model):
    """An owner's rule, written `when EVENT then ACTION [key=value ...]`.

    `text` is what the owner wrote; `event`, `action` and `params` are its parsed
    form (crm.rules.parse_rule), kept in sync by the services so that matching is a
    plain indexed query.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memory_rules")
    bot = models.ForeignKey("bots.Bot", null=True, blank=True, on_delete=models.CASCADE, related_name="memory_rules")
    text = models.CharField(max_length=1000)
    event = models.CharField(max_length=60)
    action = models.CharField(max_length=40)
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["owner", "event", "enabled"])]

    def __str__(self) -> str:
        return self.text


class RuleExecution(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    rule = models.ForeignKey(MemoryRule, on_delete=models.CASCADE, related_name="executions")
    event = models.CharField(max_length=60)
    payload = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.rule_id} on {self.event}: {self.outcome}"


class GoogleSync(models.Model):
    """Which bot an owner's Gmail and Calendar feed, and where each feed has got to.

    The Google account itself is django-allauth's (provider "google", offline access):
    its SocialToken holds the access and refresh tokens.
    """

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="google_sync")
    bot = models.ForeignKey("bots.Bot", on_delete=models.CASCADE, related_name="google_syncs")
    gmail_enabled = models.BooleanField(default=True)
    calendar_enabled = models.BooleanField(default=True)
    # The mailbox Pub/Sub notifications name ("emailAddress"), and the last history id read.
    gmail_address = models.EmailField(blank=True, db_index=True)
    gmail_history_id = models.CharField(max_length=40, blank=True)
    calendar_id = models.CharField(max_length=200, default="primary")
    # The push channel Google Calendar notifies; its token is compared to X-Goog-Channel-Token.
    calendar_channel_id = models.CharField(max_length=64, blank=True, db_index=True)
    calendar_channel_token = EncryptedTextField(blank=True)
    calendar_resource_id = models.CharField(max_length=200, blank=True)
    calendar_sync_token = models.CharField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Google sync"

    def __str__(self) -> str:
        return f"Google sync of {self.owner} into {self.bot}"
