from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone

from chatbase.core.errors import ValidationFailed
from crm.google import GoogleError
from crm.models import GoogleSync, HubSpotConnection, LeadTag, MemoryRule, RuleExecution, SyncJob, Task, WebhookEvent
from crm.rules import parse_rule
from crm.services.google import google_sync_watch
from crm.services.hubspot import hubspot_connection_disconnect
from crm.services.sync import sync_job_retry


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "source", "event_type", "event_id", "status", "attempts"]
    list_filter = ["source", "status"]
    search_fields = ["event_id", "event_type"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]

    def has_add_permission(self, request):
        # Events only ever come from the providers; staff inspect them.
        return False


@admin.register(HubSpotConnection)
class HubSpotConnectionAdmin(admin.ModelAdmin):
    list_display = ["owner", "auth_type", "state", "portal_id", "expires_at", "properties_ready", "updated_at"]
    list_filter = ["auth_type", "status"]
    search_fields = ["owner__email", "portal_id"]
    # The tokens are never shown or edited here: they are only written by the OAuth flow.
    exclude = ["access_token", "refresh_token"]
    readonly_fields = ["owner", "auth_type", "expires_at", "portal_id", "scopes", "last_error", "state"]
    actions = ["disconnect"]

    @admin.display(description="state")
    def state(self, connection: HubSpotConnection) -> str:
        if settings.HUBSPOT_ACCESS_TOKEN:
            return "connected (private app token from HUBSPOT_ACCESS_TOKEN)"
        label = connection.get_status_display()
        if connection.status == HubSpotConnection.Status.CONNECTED and connection.expires_at:
            when = "expired" if connection.expires_at <= timezone.now() else "expires"
            label += f" (access token {when} {connection.expires_at:%Y-%m-%d %H:%M} UTC, refreshed on use)"
        if connection.last_error:
            label += f" — last error: {connection.last_error}"
        return label

    @admin.action(description="Disconnect (forget the tokens)")
    def disconnect(self, request, queryset):
        for connection in queryset:
            hubspot_connection_disconnect(connection=connection)
        self.message_user(request, f"{queryset.count()} connection(s) disconnected.")


class RuleExecutionInline(admin.TabularInline):
    model = RuleExecution
    extra = 0
    can_delete = False
    fields = ["created_at", "event", "outcome", "detail"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None):
        return False


class MemoryRuleForm(forms.ModelForm):
    class Meta:
        model = MemoryRule
        fields = ["owner", "bot", "text", "enabled"]

    def clean(self):
        cleaned = super().clean()
        # The same parser as the API: staff cannot save a rule the engine cannot run.
        try:
            parsed = parse_rule(cleaned.get("text", ""))
        except ValidationFailed as exc:
            raise forms.ValidationError({"text": exc.detail}) from exc
        self.instance.event, self.instance.action, self.instance.params = parsed.event, parsed.action, parsed.params
        owner, bot = cleaned.get("owner"), cleaned.get("bot")
        if owner and bot and bot.owner_id != owner.pk:
            raise forms.ValidationError({"bot": "This bot belongs to another owner."})
        return cleaned


@admin.register(MemoryRule)
class MemoryRuleAdmin(admin.ModelAdmin):
    form = MemoryRuleForm
    list_display = ["text", "owner", "bot", "event", "action", "enabled", "updated_at"]
    list_filter = ["event", "action", "enabled"]
    search_fields = ["text", "owner__email"]
    list_select_related = ["owner", "bot"]
    readonly_fields = ["event", "action", "params"]
    inlines = [RuleExecutionInline]


@admin.register(RuleExecution)
class RuleExecutionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "rule", "event", "outcome", "detail"]
    list_filter = ["outcome", "event"]
    list_select_related = ["rule"]
    readonly_fields = ["rule", "event", "payload", "outcome", "detail", "created_at"]

    def has_add_permission(self, request):
        return False


@admin.register(GoogleSync)
class GoogleSyncAdmin(admin.ModelAdmin):
    list_display = ["owner", "bot", "gmail_enabled", "gmail_address", "calendar_enabled", "updated_at"]
    list_select_related = ["owner", "bot"]
    exclude = ["calendar_channel_token"]
    readonly_fields = [
        "gmail_address",
        "gmail_history_id",
        "calendar_channel_id",
        "calendar_resource_id",
        "calendar_sync_token",
        "last_error",
    ]
    actions = ["watch"]

    @admin.action(description="Start (or renew) watching Gmail and Calendar")
    def watch(self, request, queryset):
        for sync in queryset.select_related("owner"):
            try:
                google_sync_watch(sync=sync)
            except GoogleError as exc:
                self.message_user(request, f"{sync}: {exc}", level=messages.ERROR)
            else:
                self.message_user(request, f"{sync}: watching.")


@admin.register(SyncJob)
class SyncJobAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "kind",
        "lead",
        "status",
        "attempts",
        "next_attempt_at",
        "hubspot_object_id",
        "last_error",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["idempotency_key", "lead__email", "hubspot_object_id", "last_error"]
    list_select_related = ["lead"]
    readonly_fields = [f.name for f in SyncJob._meta.fields]
    actions = ["retry"]

    def has_add_permission(self, request):
        # Jobs come from lead changes (the outbox), never by hand.
        return False

    @admin.action(description="Retry the selected jobs")
    def retry(self, request, queryset):
        count = 0
        for job in queryset.filter(status__in=[SyncJob.Status.FAILED, SyncJob.Status.PENDING]):
            sync_job_retry(job=job)
            count += 1
        self.message_user(request, f"{count} job(s) queued again.")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "type", "priority", "lead", "owner", "due_at", "done", "created_at"]
    list_filter = ["done", "priority", "type"]
    list_editable = ["done"]
    search_fields = ["title", "lead__email", "owner__email"]
    list_select_related = ["lead", "owner"]
    raw_id_fields = ["lead", "rule", "owner"]


@admin.register(LeadTag)
class LeadTagAdmin(admin.ModelAdmin):
    list_display = ["tag", "lead", "created_at"]
    search_fields = ["tag", "lead__email"]
    list_select_related = ["lead"]
    raw_id_fields = ["lead"]
