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


class SyncJob(models.Model):
    """One write to HubSpot, in the transactional outbox.

    The row is written in the same transaction as the lead change that calls for it,
    so a change is never committed without its sync (nor a sync without its change).
    A Celery task carries it out; a beat sweeper re-enqueues what a lost queue message
    or a dead worker left behind. `idempotency_key` is unique: asking twice for the
    same write (a note for a conversation, the deal of a lead) is one job.
    """

    class Kind(models.TextChoices):
        CONTACT_UPSERT = "contact_upsert", "Contact upsert"
        NOTE = "note", "Note"
        DEAL = "deal", "Deal"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="sync_jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=200, unique=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    # The HubSpot object written (contact, note or deal id).
    hubspot_object_id = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["status", "locked_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for lead {self.lead_id} ({self.status})"


class Task(models.Model):
    """A to-do for the owner's staff, created by a rule (`create_task`); seen in admin."""

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crm_tasks")
    rule = models.ForeignKey(MemoryRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    lead = models.ForeignKey("leads.Lead", null=True, blank=True, on_delete=models.CASCADE, related_name="crm_tasks")
    title = models.CharField(max_length=300)
    type = models.CharField(max_length=50, default="follow_up")
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    event = models.CharField(max_length=60, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    done = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["done", "due_at", "-created_at"]
        indexes = [models.Index(fields=["owner", "done"])]

    def __str__(self) -> str:
        return self.title


class LeadTag(models.Model):
    """A label a rule put on a lead (`tag_lead`)."""

    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="crm_tags")
    tag = models.CharField(max_length=50)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lead", "tag"], name="crm_leadtag_unique")]

    def __str__(self) -> str:
        return self.tag
