"""The staff back office for leads: filters, search, the explained score, the
transcript, bulk status changes, CSV export, and two charts on the list."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from chatbase.core.admin import ReadOnlyTabularInline
from chatbase.core.errors import ChatbaseError, ValidationFailed
from leads import charts, selectors, services
from leads.csv_export import csv_lines
from leads.extraction import email_normalise, phone_normalise
from leads.models import Lead, LeadScoreEvent

EDITABLE = ["email", "name", "phone", "company", "status", "consent"]


class ScoreRangeFilter(admin.SimpleListFilter):
    title = "score"
    parameter_name = "score_range"
    RANGES = {"0-29": (0, 29), "30-59": (30, 59), "60-79": (60, 79), "80-100": (80, 100)}

    def lookups(self, request, model_admin):
        return [(key, key) for key in self.RANGES]

    def queryset(self, request, queryset):
        if self.value() in self.RANGES:
            low, high = self.RANGES[self.value()]
            return queryset.filter(score__gte=low, score__lte=high)
        return queryset


def _status_action(status: str):
    """A bulk action moving the selected leads to `status` through the service."""

    def action(model_admin, request, queryset):
        changed = 0
        for lead in queryset.select_related("bot"):
            if lead.status != status:
                services.lead_status_change(lead=lead, status=status)
                changed += 1
        model_admin.message_user(request, f"Marked {changed} lead(s) as {status}.")

    action.__name__ = f"mark_{status}"
    return admin.action(description=f"Mark selected leads {status}")(action)


class LeadAdminForm(forms.ModelForm):
    class Meta:
        model = Lead
        fields = EDITABLE

    # The services' normalisers: a bad address or number is a form error, not a lost edit.
    def clean_email(self):
        email = _form_value(email_normalise, self.cleaned_data["email"])
        # The unique constraint names `bot`, which the form does not edit, so Django skips it.
        if selectors.lead_email_taken(bot_id=self.instance.bot_id, email=email, exclude_pk=self.instance.pk):
            raise forms.ValidationError("Another lead of this bot has this e-mail address.")
        return email

    def clean_phone(self):
        return _form_value(phone_normalise, self.cleaned_data["phone"])


def _form_value(normalise, value):
    try:
        return normalise(value)
    except ValidationFailed as exc:
        raise forms.ValidationError(exc.detail) from exc


class ScoreEventInline(ReadOnlyTabularInline):
    model = LeadScoreEvent
    fields = ["created_at", "marker", "points", "evidence", "score_after"]
    ordering = ["-created_at", "-id"]


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    form = LeadAdminForm
    list_display = ["id", "email", "name", "phone", "bot", "status", "score", "nearest_area", "distance", "created_at"]
    list_filter = [
        "status",
        ("bot", admin.RelatedOnlyFieldListFilter),
        ScoreRangeFilter,
        ("nearest_area", admin.RelatedOnlyFieldListFilter),
        "source",
        "created_at",
    ]
    search_fields = ["email", "name", "phone", "company"]
    list_select_related = ["bot", "nearest_area"]
    date_hierarchy = "created_at"
    inlines = [ScoreEventInline]
    actions = ["mark_qualified", "mark_contacted", "mark_won", "mark_lost", "export_csv"]
    fieldsets = [
        (None, {"fields": [*EDITABLE]}),
        ("Score", {"fields": ["score", "score_explained"]}),
        ("Conversation", {"fields": ["transcript"]}),
        (
            "Where",
            {
                "fields": [
                    "ip_anonymised",
                    "country",
                    "region",
                    "city",
                    "latitude",
                    "longitude",
                    "nearest_area",
                    "distance_km",
                ]
            },
        ),
        (
            "Record",
            {"fields": ["bot", "source", "hubspot_id", "consent_at", "qualified_at", "created_at", "updated_at"]},
        ),
    ]
    readonly_fields = [
        "score",
        "score_explained",
        "transcript",
        "ip_anonymised",
        "country",
        "region",
        "city",
        "latitude",
        "longitude",
        "nearest_area",
        "distance_km",
        "bot",
        "source",
        "hubspot_id",
        "consent_at",
        "qualified_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False  # leads come from conversations, forms and the API

    @admin.display(description="distance (km)", ordering="distance_km")
    def distance(self, lead):
        return "" if lead.distance_km is None else f"{lead.distance_km:.1f}"

    @admin.display(description="breakdown")
    def score_explained(self, lead):
        lines = lead.score_breakdown or []
        if not lines:
            return "No marker has fired yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{:+d}</td><td>{}</td></tr>",
            ((line["marker"], line["points"], line["evidence"]) for line in lines),
        )
        return format_html(
            '<table class="score-breakdown"><thead><tr><th>marker</th><th>points</th><th>evidence</th></tr>'
            "</thead><tbody>{}</tbody><tfoot><tr><th>score</th><th>{}</th><th>(0-100)</th></tr></tfoot></table>",
            rows,
            lead.score,
        )

    @admin.display(description="transcript")
    def transcript(self, lead):
        messages_ = selectors.lead_transcript(lead=lead)
        if not messages_:
            return "No messages."
        # format_html_join escapes every message: visitors' text is never HTML here.
        return format_html(
            '<div class="lead-transcript">{}</div>',
            format_html_join(
                "",
                "<p><strong>{}</strong> <small>{}</small><br>{}</p>",
                ((m.role, timezone.localtime(m.created_at).strftime("%Y-%m-%d %H:%M"), m.text) for m in messages_),
            ),
        )

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in EDITABLE if name in form.changed_data}
        # The form changed the instance in memory; the service compares with the row.
        lead = Lead.objects.select_related("bot").get(pk=obj.pk)
        try:
            services.lead_update(lead=lead, **fields)
        except ChatbaseError as exc:
            self.message_user(request, f"Not saved: {exc.detail}", level=messages.ERROR)

    mark_qualified = _status_action(Lead.Status.QUALIFIED)
    mark_contacted = _status_action(Lead.Status.CONTACTED)
    mark_won = _status_action(Lead.Status.WON)
    mark_lost = _status_action(Lead.Status.LOST)

    @admin.action(description="Export selected leads as CSV")
    def export_csv(self, request, queryset):
        leads = queryset.select_related("bot", "nearest_area").order_by("-created_at", "-id")
        response = StreamingHttpResponse(csv_lines(leads.iterator(chunk_size=500)), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="leads-{timezone.now():%Y%m%d-%H%M%S}.csv"'
        return response

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # The charts follow the filters and search the staff member applied.
            queryset = changelist.queryset
            response.context_data["lead_charts"] = [charts.leads_per_day(queryset), charts.score_distribution(queryset)]
        return response


@admin.register(LeadScoreEvent)
class LeadScoreEventAdmin(admin.ModelAdmin):
    list_display = ["lead", "marker", "points", "score_after", "created_at"]
    list_filter = ["marker"]
    list_select_related = ["lead"]
    search_fields = ["lead__email", "evidence"]
    readonly_fields = [f.name for f in LeadScoreEvent._meta.concrete_fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
