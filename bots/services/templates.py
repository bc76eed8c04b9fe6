"""Writes of prompt templates. Every write invalidates the template cache after commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from bots.models import PromptTemplate
from bots.templates import SHIPPED_TEMPLATES, template_cache_invalidate
from chatbase.core.errors import Conflict, ValidationFailed

EDITABLE = (
    "name",
    "slug",
    "description",
    "system_prompt",
    "temperature",
    "max_tokens",
    "personality_traits",
    "is_default",
    "selection_rules",
)
_RULE_KEYS = {"keywords", "topics", "hours", "min_age", "max_age", "priority"}


def selection_rules_clean(rules: Any) -> dict:
    if not isinstance(rules, dict):
        raise ValidationFailed("selection_rules: must be a JSON object.")
    unknown = sorted(set(rules) - _RULE_KEYS)
    if unknown:
        raise ValidationFailed(f"selection_rules: unknown key(s) {', '.join(unknown)}; known: {sorted(_RULE_KEYS)}.")
    for key in ("keywords", "topics"):
        value = rules.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 60 for v in value):
            raise ValidationFailed(f"selection_rules.{key}: must be a list of short strings.")
    hours = rules.get("hours")
    if hours is not None and not (
        isinstance(hours, list) and len(hours) == 2 and all(isinstance(h, int) and 0 <= h <= 23 for h in hours)
    ):
        raise ValidationFailed("selection_rules.hours: must be [start_hour, end_hour] with hours 0-23.")
    for key in ("min_age", "max_age", "priority"):
        value = rules.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000):
            raise ValidationFailed(f"selection_rules.{key}: must be an integer.")
    return rules


def _apply(template: PromptTemplate, fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValidationFailed(f"Unknown template field(s): {', '.join(sorted(unknown))}.")
    if "selection_rules" in fields:
        fields["selection_rules"] = selection_rules_clean(fields["selection_rules"])
    if fields.get("is_default"):
        # One default at a time (a partial unique constraint enforces it too, and
        # full_clean below checks it): the old default steps down first.
        PromptTemplate.objects.filter(is_default=True).exclude(pk=template.pk).update(is_default=False)
    for name, value in fields.items():
        setattr(template, name, value)
    template.full_clean(validate_unique=False)


@transaction.atomic
def template_create(**fields: Any) -> PromptTemplate:
    if PromptTemplate.objects.filter(slug=fields.get("slug")).exists():
        raise Conflict(f"A template with slug {fields.get('slug')!r} already exists.")
    template = PromptTemplate()
    _apply(template, fields)
    template.save()
    transaction.on_commit(template_cache_invalidate)
    return template


@transaction.atomic
def template_update(*, template: PromptTemplate, **fields: Any) -> PromptTemplate:
    if "slug" in fields and PromptTemplate.objects.filter(slug=fields["slug"]).exclude(pk=template.pk).exists():
        raise Conflict(f"A template with slug {fields['slug']!r} already exists.")
    _apply(template, fields)
    template.save(update_fields=[*fields, "updated_at"])
    transaction.on_commit(template_cache_invalidate)
    return template


@transaction.atomic
def template_delete(*, template: PromptTemplate) -> None:
    if template.is_default:
        raise Conflict("The default template cannot be deleted; make another template the default first.")
    template.delete()
    transaction.on_commit(template_cache_invalidate)


@transaction.atomic
def templates_ensure_shipped() -> int:
    """Create the shipped templates that are missing (never overwrite staff edits). Returns how many."""
    created = 0
    has_default = PromptTemplate.objects.filter(is_default=True).exists()
    for spec in SHIPPED_TEMPLATES:
        if PromptTemplate.objects.filter(slug=spec["slug"]).exists():
            continue
        PromptTemplate.objects.create(**{**spec, "is_default": spec.get("is_default", False) and not has_default})
        created += 1
    if created:
        transaction.on_commit(template_cache_invalidate)
    return created
