"""Reads of the crm app."""

from __future__ import annotations

from django.db.models import QuerySet

from chatbase.core.errors import NotFound
from crm.models import MemoryRule


def memory_rule_list(*, owner) -> QuerySet[MemoryRule]:
    return MemoryRule.objects.filter(owner=owner).select_related("bot").order_by("id")


def memory_rule_get(*, owner, rule_id: int) -> MemoryRule:
    rule = memory_rule_list(owner=owner).filter(pk=rule_id).first()
    if rule is None:
        raise NotFound("No such rule.")
    return rule
