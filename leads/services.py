"""Writes of leads: capture (upsert), score, status, edits and geo enrichment.

Every write sends ``lead_changed`` inside its transaction (the CRM's outbox row
commits with it); ``lead_created`` and ``lead_qualified`` go out after commit.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bots.models import Bot
from chatbase.core.errors import Conflict, ValidationFailed
from conversations.models import Conversation, Message
from geo import iplookup
from geo import selectors as geo_selectors
from leads import scoring, selectors
from leads.extraction import email_normalise, extract_emails, extract_phones, phone_normalise
from leads.models import Lead, LeadScoreEvent
from leads.signals import lead_changed, lead_created, lead_qualified

logger = logging.getLogger(__name__)

MAX_TEXT_FIELD = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SOURCE_FOR_CHANNEL = {
    Conversation.Channel.WIDGET: Lead.Source.WIDGET,
    Conversation.Channel.API: Lead.Source.API,
    Conversation.Channel.MATCHMAKING: Lead.Source.MATCHMAKING,
}


def _text_field(name: str, value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{name}: must be a string.")
    value = " ".join(_CONTROL.sub(" ", value).split())
    if len(value) > MAX_TEXT_FIELD:
        raise ValidationFailed(f"{name}: at most {MAX_TEXT_FIELD} characters.")
    return value


def _consent_value(consent: object) -> bool | None:
    if consent is None or isinstance(consent, bool):
        return consent
    raise ValidationFailed("consent: must be true or false.")


def consent_required(bot: Bot) -> bool:
    return bool((bot.configuration or {}).get("require_consent"))


def _save(lead: Lead, fields: set[str], *, created: bool = False) -> None:
    """Persist the changed fields and tell lead_changed receivers, in this transaction."""
    if created:
        lead.save()
        fields = fields or {f.name for f in Lead._meta.concrete_fields} - {"id"}
    elif fields:
        lead.save(update_fields=[*sorted(fields), "updated_at"])
    if created or fields:
        lead_changed.send(sender=Lead, lead=lead, created=created, changed_fields=set(fields))


def _assign(lead: Lead, changed: set[str], **values) -> None:
    """Set the fields whose value differs and note them as changed."""
    for field, value in values.items():
        if getattr(lead, field) != value:
            setattr(lead, field, value)
            changed.add(field)


def _qualify(lead: Lead, changed: set[str]) -> None:
    if lead.qualified_at is None:
        _assign(lead, changed, qualified_at=timezone.now())
    transaction.on_commit(lambda: lead_qualified.send(sender=Lead, lead=lead))


def _after_commit_created(lead: Lead) -> None:
    transaction.on_commit(lambda: lead_created.send(sender=Lead, lead=lead))


def _find_target(
    *, bot: Bot, conversation: Conversation | None, email: str, phone: str
) -> tuple[Lead | None, Lead | None]:
    """(the lead these details belong to, the conversation's own lead)."""
    conversation_lead = None
    if conversation is not None:
        conversation_lead = (
            Lead.objects.select_for_update().filter(bot=bot, conversations=conversation).order_by("pk").first()
        )
    target = None
    if email:
        target = Lead.objects.select_for_update().filter(bot=bot, email__iexact=email).first()
    if target is None and phone:
        target = Lead.objects.select_for_update().filter(bot=bot, phone=phone).order_by("pk").first()
        if target is not None and email and target.email and target.email != email:
            target = None  # the same phone under another address: a different lead
    # The conversation's lead takes the details, unless it is someone else's address.
    other_address = conversation_lead is not None and email and conversation_lead.email not in ("", email)
    if target is None and conversation_lead is not None and not other_address:
        target = conversation_lead
    return target, conversation_lead


def _merge_into(*, target: Lead, other: Lead) -> set[str]:
    """Fold an anonymous lead of the same visitor into the identified one."""
    changed: set[str] = set()
    for field in ("name", "phone", "company", "ip_anonymised"):
        if not getattr(target, field) and getattr(other, field):
            setattr(target, field, getattr(other, field))
            changed.add(field)
    if other.consent and not target.consent:
        target.consent, target.consent_at = True, other.consent_at
        changed |= {"consent", "consent_at"}
    target.conversations.add(*other.conversations.all())
    LeadScoreEvent.objects.filter(lead=other).update(lead=target)
    other.delete()
    return changed


@transaction.atomic
def lead_capture(
    *,
    bot: Bot,
    conversation: Conversation | None = None,
    email: object = "",
    name: object = "",
    phone: object = "",
    company: object = "",
    source: str,
    consent: object = None,
    ip: str | None = None,
) -> Lead:
    """Create or update the bot's lead for these contact details (upsert by e-mail).

    Non-empty details overwrite (a visitor correcting their phone), except the
    e-mail, which identifies the lead. A lead found by e-mail absorbs the
    anonymous lead of the same conversation. ``ip`` is anonymised before it is
    stored, and geolocated after commit, unless the bot requires consent and the
    visitor has not given it.
    """
    email = email_normalise(email)
    phone = phone_normalise(phone)
    name = _text_field("name", name)
    company = _text_field("company", company)
    consent = _consent_value(consent)
    if source not in Lead.Source.values:
        raise ValidationFailed(f"source: must be one of {', '.join(Lead.Source.values)}.")
    if not (email or phone or name or company) and conversation is None:
        raise ValidationFailed("Give at least one of email, phone or name.")

    target, conversation_lead = _find_target(bot=bot, conversation=conversation, email=email, phone=phone)
    changed: set[str] = set()
    created = target is None
    if created:
        target = Lead(bot=bot, source=source)
    if email and not target.email:
        _assign(target, changed, email=email)
    _assign(target, changed, **{k: v for k, v in (("name", name), ("phone", phone), ("company", company)) if v})
    _set_consent(target, changed, consent)
    if created:
        try:
            with transaction.atomic():
                _save(target, changed, created=True)
        except IntegrityError:
            # Another capture of the same e-mail committed first: update that one.
            return lead_capture(
                bot=bot,
                conversation=conversation,
                email=email,
                name=name,
                phone=phone,
                company=company,
                source=source,
                consent=consent,
                ip=ip,
            )
        _after_commit_created(target)
        changed = set()
    # An anonymous lead already in the CRM keeps its record; the others fold in.
    anonymous = conversation_lead is not None and not conversation_lead.email and not conversation_lead.hubspot_id
    if anonymous and conversation_lead.pk != target.pk:
        changed |= _merge_into(target=target, other=conversation_lead)
    if conversation is not None:
        target.conversations.add(conversation)

    anonymised = iplookup.ip_anonymise(ip)
    geolocate = False
    if anonymised and anonymised != target.ip_anonymised and (target.consent or not consent_required(bot)):
        _assign(target, changed, ip_anonymised=anonymised)
        geolocate = True
    _save(target, changed)
    lead_score_recompute(lead=target)
    if geolocate:
        from leads.tasks import lead_geo_enrich_task

        lead_id = target.pk
        transaction.on_commit(lambda: lead_geo_enrich_task.delay(lead_id))
    return target


_LOCATION_FIELDS = {
    "ip_anonymised": None,
    "country": "",
    "region": "",
    "city": "",
    "latitude": None,
    "longitude": None,
    "nearest_area": None,
    "distance_km": None,
}


def _set_consent(lead: Lead, changed: set[str], consent: bool | None) -> None:
    """Record a consent answer; withdrawn where the bot requires it, the location goes too."""
    if consent is None or consent == lead.consent:
        return
    _assign(lead, changed, consent=consent, consent_at=timezone.now() if consent else None)
    if not consent and consent_required(lead.bot):
        _assign(lead, changed, **_LOCATION_FIELDS)


def _user_messages(lead: Lead):
    return Message.objects.filter(conversation__leads=lead, role=Message.Role.USER)


@transaction.atomic
def lead_score_recompute(*, lead: Lead) -> Lead:
    """Score the lead from scratch; record each marker's change as a LeadScoreEvent.

    Crossing LEAD_QUALIFIED_THRESHOLD upwards makes a new lead qualified and sends
    ``lead_qualified`` (after commit) once per crossing.
    """
    # Concurrent recomputes (two messages, two workers) take turns on the row.
    Lead.objects.select_for_update().filter(pk=lead.pk).values_list("pk", flat=True).first()
    lead.refresh_from_db()
    messages = _user_messages(lead)
    recent = list(messages.order_by("-created_at", "-id").values_list("id", "text")[: settings.LEAD_SCORE_MAX_MESSAGES])
    visitors = lead.conversations.values("visitor_id")
    visits = Conversation.objects.filter(bot_id=lead.bot_id, visitor_id__in=visitors).count()
    area = None
    if lead.nearest_area_id and lead.inside_service_area:
        area = (lead.nearest_area.name, lead.distance_km)
    score = scoring.score_compute(
        weights=scoring.weights_for(lead.bot),
        messages=reversed(recent),
        user_message_count=messages.count(),
        engagement_messages=settings.LEAD_ENGAGEMENT_MESSAGES,
        visits=visits,
        email=bool(lead.email),
        phone=bool(lead.phone),
        name=bool(lead.name),
        area=area,
    )
    old_points = {line["marker"]: line["points"] for line in lead.score_breakdown or []}
    old_evidence = {line["marker"]: line.get("evidence", "") for line in lead.score_breakdown or []}
    new_lines = {line.marker: line for line in score.lines}
    events = []
    for marker in [*new_lines, *(m for m in old_points if m not in new_lines)]:
        line = new_lines.get(marker)
        delta = (line.points if line else 0) - old_points.get(marker, 0)
        if delta:
            events.append(
                LeadScoreEvent(
                    lead=lead,
                    marker=marker,
                    points=delta,
                    evidence=(line.evidence if line else old_evidence.get(marker, ""))[:500],
                    message_id=line.message_id if line else None,
                    score_after=score.total,
                )
            )
    LeadScoreEvent.objects.bulk_create(events)
    changed: set[str] = set()
    threshold = settings.LEAD_QUALIFIED_THRESHOLD
    crossed = lead.score < threshold <= score.total
    _assign(lead, changed, score=score.total, score_breakdown=score.breakdown)
    if crossed:
        if lead.status == Lead.Status.NEW:
            _assign(lead, changed, status=Lead.Status.QUALIFIED)
        _qualify(lead, changed)
    _save(lead, changed)
    return lead


@transaction.atomic
def lead_status_change(*, lead: Lead, status: str) -> Lead:
    """Staff or the API move a lead along; marking it qualified by hand also tells listeners."""
    if status not in Lead.Status.values:
        raise ValidationFailed(f"status: must be one of {', '.join(Lead.Status.values)}.")
    if status == lead.status:
        return lead
    changed: set[str] = set()
    _assign(lead, changed, status=status)
    if status == Lead.Status.QUALIFIED:
        _qualify(lead, changed)
    _save(lead, changed)
    return lead


@transaction.atomic
def lead_update(*, lead: Lead, **fields) -> Lead:
    """An owner's edit (API PATCH, admin): name, company, phone, e-mail, status, consent."""
    allowed = {"name", "company", "phone", "email", "status", "consent"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationFailed(f"Not editable: {', '.join(sorted(unknown))}.")
    status = fields.pop("status", None)
    changed: set[str] = set()
    if "email" in fields:
        email = email_normalise(fields.pop("email"))
        if email != lead.email and selectors.lead_email_taken(bot_id=lead.bot_id, email=email, exclude_pk=lead.pk):
            raise Conflict("Another lead of this bot has this e-mail address.", code="duplicate_email")
        _assign(lead, changed, email=email)
    if "phone" in fields:
        _assign(lead, changed, phone=phone_normalise(fields.pop("phone")))
    for name in ("name", "company"):
        if name in fields:
            _assign(lead, changed, **{name: _text_field(name, fields.pop(name))})
    if "consent" in fields:
        _set_consent(lead, changed, _consent_value(fields.pop("consent")))
    _save(lead, changed)
    if status is not None:
        lead_status_change(lead=lead, status=status)
    if changed & {"email", "phone", "name"}:
        lead_score_recompute(lead=lead)
    return lead


def lead_geo_enrich(*, lead: Lead) -> Lead:
    """Geolocate the lead's (anonymised) network and find its nearest service area.

    The ipinfo call happens outside any transaction: no row lock is held while
    waiting on the network.
    """
    if not lead.ip_anonymised or (consent_required(lead.bot) and not lead.consent):
        return lead
    geo = iplookup.ip_geolocate(ip=lead.ip_anonymised)
    if geo is None:
        return lead
    nearest = None
    if geo.latitude is not None and geo.longitude is not None:
        nearest = geo_selectors.service_area_nearest(latitude=geo.latitude, longitude=geo.longitude)
    with transaction.atomic():
        lead = Lead.objects.select_for_update().select_related("bot").get(pk=lead.pk)
        if consent_required(lead.bot) and not lead.consent:
            return lead  # consent withdrawn while we were looking it up
        values = {
            "country": geo.country,
            "region": geo.region,
            "city": geo.city,
            "latitude": geo.latitude,
            "longitude": geo.longitude,
            "nearest_area": nearest.area if nearest else None,
            "distance_km": round(nearest.distance_km, 3) if nearest else None,
        }
        changed: set[str] = set()
        _assign(lead, changed, **values)
        _save(lead, changed)
        if changed:
            lead_score_recompute(lead=lead)
    return lead


# --- conversation messages ----------------------------------------------------------
def lead_message_process(*, message: Message) -> Lead | None:
    """A user's chat message: capture contact details it contains, create a lead when
    the conversation shows buying intent, and rescore the conversation's leads."""
    conversation = message.conversation
    bot = conversation.bot
    emails = extract_emails(message.text)
    phones = extract_phones(message.text)
    source = SOURCE_FOR_CHANNEL.get(conversation.channel, Lead.Source.WIDGET)
    ip = (conversation.metadata or {}).get("ip_anonymised")
    if emails or phones:
        return lead_capture(
            bot=bot,
            conversation=conversation,
            email=emails[0] if emails else "",
            phone=phones[0] if phones else "",
            source=source,
            ip=ip,
        )
    leads = list(Lead.objects.filter(bot=bot, conversations=conversation).order_by("pk"))
    if leads:
        for lead in leads:
            lead_score_recompute(lead=lead)
        return leads[0]
    if scoring.BUYING_INTENT_MARKERS & set(scoring.detect_markers(message.text)):
        return lead_capture(bot=bot, conversation=conversation, source=source, ip=ip)
    return None
