"""Memory rules: their CRUD, and running the matching ones when an event happens."""

from __future__ import annotations

import logging
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from chatbase.core.errors import ValidationFailed
from crm.models import MemoryRule, RuleExecution
from crm.rules import EVENTS, parse_duration, parse_rule

logger = logging.getLogger(__name__)
MAX_RULES_PER_OWNER = 200


class ActionFailed(Exception):
    """An action could not be carried out; recorded on its RuleExecution."""


def _check_bot(owner, bot):
    if bot is not None and bot.owner_id != owner.pk:
        raise ValidationFailed("bot: no such bot.", code="invalid_bot")


@transaction.atomic
def memory_rule_create(*, owner, text: str, bot=None, enabled: bool = True) -> MemoryRule:
    parsed = parse_rule(text)
    _check_bot(owner, bot)
    if MemoryRule.objects.filter(owner=owner).count() >= MAX_RULES_PER_OWNER:
        raise ValidationFailed(f"An owner may have at most {MAX_RULES_PER_OWNER} rules.", code="too_many_rules")
    return MemoryRule.objects.create(
        owner=owner,
        bot=bot,
        text=" ".join(text.split()),
        event=parsed.event,
        action=parsed.action,
        params=parsed.params,
        enabled=enabled,
    )


_UNSET = object()


@transaction.atomic
def memory_rule_update(*, rule: MemoryRule, text: str | None = None, bot=_UNSET, enabled: bool | None = None):
    fields = ["updated_at"]
    if text is not None:
        parsed = parse_rule(text)
        rule.text = " ".join(text.split())
        rule.event, rule.action, rule.params = parsed.event, parsed.action, parsed.params
        fields += ["text", "event", "action", "params"]
    if bot is not _UNSET:
        _check_bot(rule.owner, bot)
        rule.bot = bot
        fields.append("bot")
    if enabled is not None:
        rule.enabled = enabled
        fields.append("enabled")
    rule.save(update_fields=fields)
    return rule


@transaction.atomic
def memory_rule_delete(*, rule: MemoryRule) -> None:
    rule.delete()


# --- running rules ------------------------------------------------------------


def rules_emit(*, event: str, owner_id: int, payload: dict) -> None:
    """Run the owner's rules for this event in a worker, once the current transaction commits."""
    if event not in EVENTS:
        raise ValueError(f"unknown rule event {event!r}")
    from crm.tasks import rules_run_task

    # Most events match no rule: no task for those.
    if not MemoryRule.objects.filter(owner_id=owner_id, event=event, enabled=True).exists():
        return
    transaction.on_commit(partial(rules_run_task.delay, event, owner_id, payload), robust=True)


def _lead_of(rule: MemoryRule, payload: dict):
    from leads.models import Lead

    lead_id = payload.get("lead_id")
    if not lead_id:
        raise ActionFailed("This event concerns no lead.")
    lead = Lead.objects.select_related("bot").filter(pk=lead_id, bot__owner_id=rule.owner_id).first()
    if lead is None:
        raise ActionFailed(f"Lead {lead_id} no longer exists.")
    return lead


def _describe(event: str, payload: dict) -> str:
    subject = ", ".join(f"{key}={value}" for key, value in sorted(payload.items()) if not isinstance(value, dict))
    return f"{event} ({subject})" if subject else event


def _create_task(rule: MemoryRule, event: str, payload: dict) -> str:
    from crm.models import Task

    params = rule.params
    lead = _lead_of(rule, payload) if payload.get("lead_id") else None
    kind = params.get("type", "follow_up")
    title = params.get("title") or f"{kind.replace('_', ' ').capitalize()}: {lead or _describe(event, payload)}"
    due = timezone.now() + parse_duration(params["due_in"]) if params.get("due_in") else None
    task = Task.objects.create(
        owner_id=rule.owner_id,
        rule=rule,
        lead=lead,
        title=title[:300],
        type=kind[:50],
        priority=params.get("priority", Task.Priority.NORMAL),
        due_at=due,
        event=event,
    )
    return f"task {task.pk} created"


def _log(rule: MemoryRule, event: str, payload: dict) -> str:
    level = getattr(logging, rule.params.get("level", "info").upper())
    message = rule.params.get("message", "rule matched")
    logger.log(level, "Rule %s on %s: %s", rule.pk, _describe(event, payload), message)
    return f"logged: {message}"


def _sync_to_hubspot(rule: MemoryRule, event: str, payload: dict) -> str:
    from crm.services.hubspot import hubspot_enabled_for
    from crm.services.sync import sync_job_enqueue_contact

    lead = _lead_of(rule, payload)
    if not hubspot_enabled_for(owner_id=rule.owner_id):
        raise ActionFailed("HubSpot is not connected.")
    job = sync_job_enqueue_contact(lead=lead)
    if job is None:
        raise ActionFailed("The lead has no e-mail address to sync by.")
    return f"sync job {job.pk} queued"


def _tag_lead(rule: MemoryRule, event: str, payload: dict) -> str:
    from crm.models import LeadTag

    lead = _lead_of(rule, payload)
    _, created = LeadTag.objects.get_or_create(lead=lead, tag=rule.params["tag"][:50])
    return f"tagged {rule.params['tag']}" if created else f"already tagged {rule.params['tag']}"


def _notify_email(rule: MemoryRule, event: str, payload: dict) -> str:
    to = rule.params.get("to") or rule.owner.email
    subject = rule.params.get("subject") or f"ChatBase: {event}"
    body = f"Your rule “{rule.text}” matched.\n\nEvent: {_describe(event, payload)}\n"
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
    return f"e-mailed {to}"


ACTIONS = {
    "create_task": _create_task,
    "log": _log,
    "sync_to_hubspot": _sync_to_hubspot,
    "tag_lead": _tag_lead,
    "notify_email": _notify_email,
}


def rules_run(*, event: str, owner_id: int, payload: dict) -> list[RuleExecution]:
    """Run every enabled rule of the owner for this event; each outcome is recorded.

    Each action runs in its own savepoint: one that fails (even with a database
    error) is recorded as failed and the others still run.
    """
    rules = MemoryRule.objects.select_related("owner").filter(owner_id=owner_id, event=event, enabled=True)
    bot_id = payload.get("bot_id")
    executions = []
    for rule in rules:
        if rule.bot_id is not None and rule.bot_id != bot_id:
            continue
        try:
            with transaction.atomic():
                detail = ACTIONS[rule.action](rule, event, payload)
            outcome = RuleExecution.Outcome.OK
        except Exception as exc:
            if not isinstance(exc, ActionFailed):
                logger.exception("Rule %s (%s) failed on %s", rule.pk, rule.action, event)
            outcome, detail = RuleExecution.Outcome.FAILED, f"{exc.__class__.__name__}: {exc}"
        executions.append(
            RuleExecution.objects.create(
                rule=rule, event=event, payload=payload, outcome=outcome, detail=str(detail)[:2000]
            )
        )
    return executions
