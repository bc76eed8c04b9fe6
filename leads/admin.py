from django.contrib import admin

from leads.models import Lead, LeadScoreEvent


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["id", "email", "name", "phone", "bot", "status", "score", "nearest_area", "created_at"]
    list_filter = ["status", "bot", "source"]
    search_fields = ["email", "name", "phone", "company"]
    list_select_related = ["bot", "nearest_area"]
    readonly_fields = [f.name for f in Lead._meta.concrete_fields]


@admin.register(LeadScoreEvent)
class LeadScoreEventAdmin(admin.ModelAdmin):
    list_display = ["lead", "marker", "points", "score_after", "created_at"]
    list_filter = ["marker"]
    list_select_related = ["lead"]
    readonly_fields = [f.name for f in LeadScoreEvent._meta.concrete_fields]
