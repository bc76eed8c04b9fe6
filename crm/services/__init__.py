"""Writes of the crm app, one module per area; the webhook ledger's API is re-exported here."""

from crm.services.webhooks import webhook_event_finish, webhook_event_record

__all__ = ["webhook_event_finish", "webhook_event_record"]
