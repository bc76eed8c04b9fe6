from django.contrib import admin

from chatbase.core.admin import ReadOnlyTabularInline
from conversations import services
from conversations.models import Conversation, Message


class MessageInline(ReadOnlyTabularInline):
    model = Message
    fields = ["created_at", "role", "sender", "text", "providers", "output_tokens", "cost_usd", "incomplete"]
    ordering = ["created_at", "id"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "bot", "visitor_id", "channel", "status", "message_count", "cost_usd", "last_activity_at"]
    list_filter = ["status", "channel", "bot"]
    search_fields = ["visitor_id", "bot__name", "messages__text"]
    list_select_related = ["bot"]
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in Conversation._meta.fields]
    inlines = [MessageInline]
    actions = ["end_conversations"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="End selected conversations")
    def end_conversations(self, request, queryset):
        for conversation in queryset:
            services.conversation_end(conversation=conversation, reason="ended_by_staff")
        self.message_user(request, f"Ended {queryset.count()} conversation(s).")


# The matchmaking queue and rooms register themselves.
import conversations.matchmaking.admin  # noqa: E402, F401
