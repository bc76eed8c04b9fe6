from django.contrib import admin

from crm.models import WebhookEvent


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
