"""Lead events for the rules engine and the CRM sync (docs/leads.md).

lead_changed(sender=Lead, lead=..., created: bool, changed_fields: set[str])
    Sent INSIDE the transaction of every lead write, so that a receiver can write
    in the same transaction (the CRM's sync outbox row commits with the change or
    not at all). Receivers must not call the network.
lead_created(sender=Lead, lead=...)
    Sent after commit, once per new lead.
lead_qualified(sender=Lead, lead=...)
    Sent after commit each time the score crosses LEAD_QUALIFIED_THRESHOLD upwards.
"""

from django.dispatch import Signal

lead_changed = Signal()
lead_created = Signal()
lead_qualified = Signal()
