"""Admin of the queue and rooms: read-only views of live state (registered by conversations.admin)."""

from django.contrib import admin

from chatbase.core.admin import ReadOnlyTabularInline
from conversations.matchmaking.models import MatchMessage, MatchRoom, MatchTicket


@admin.register(MatchTicket)
class MatchTicketAdmin(admin.ModelAdmin):
    list_display = ["user_id", "pool", "room", "bot_conversation", "joined_at", "heartbeat_at", "instance"]
    list_filter = ["pool"]
    search_fields = ["user_id"]
    readonly_fields = [f.name for f in MatchTicket._meta.fields]

    # Tickets belong to open sockets: created by joining, removed by leaving or the sweep.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class MatchMessageInline(ReadOnlyTabularInline):
    """What the two said to each other (for a report of abuse), read-only."""

    model = MatchMessage
    fields = ["created_at", "user_id", "text"]
    ordering = ["created_at", "id"]


@admin.register(MatchRoom)
class MatchRoomAdmin(admin.ModelAdmin):
    inlines = [MatchMessageInline]
    list_display = ["id", "user_a", "user_b", "pool", "started_at", "ended_at", "end_reason"]
    list_filter = ["end_reason", "pool"]
    search_fields = ["user_a", "user_b"]
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in MatchRoom._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
