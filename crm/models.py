from django.db import models


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
