from django.contrib import admin

from bots.models import Bot, Chunk, Document, PromptTemplate


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "temperature", "max_tokens", "is_default", "updated_at"]
    search_fields = ["name", "slug"]


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "status", "provider", "chunk_count", "created_at"]
    list_filter = ["status", "provider"]
    search_fields = ["name", "owner__email", "public_key"]
    list_select_related = ["owner"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "bot", "source_type", "status", "progress", "chunk_count", "updated_at"]
    list_filter = ["status", "source_type"]
    list_select_related = ["bot"]


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["document", "position", "token_count"]
    list_select_related = ["document"]
    exclude = ["embedding"]
