from django import forms
from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import intcomma
from django.urls import reverse
from django.utils.html import format_html

from bots.models import Bot, Chunk, Document, PromptTemplate
from bots.services import bots as bot_services
from bots.services import documents as document_services
from bots.services import templates as template_services
from bots.widget import embed_snippet
from chatbase.core.errors import ValidationFailed
from conversations.budgets import limits_for
from conversations.selectors import bot_queryset_with_usage_today


class PromptTemplateAdminForm(forms.ModelForm):
    class Meta:
        model = PromptTemplate
        fields = list(template_services.EDITABLE)

    def clean_selection_rules(self):
        try:
            return template_services.selection_rules_clean(self.cleaned_data["selection_rules"])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.detail) from exc

    def _get_validation_exclusions(self):
        # Model validation would refuse a second default before the service makes the
        # previous one step down; the database constraint still guards the result.
        return {*super()._get_validation_exclusions(), "is_default"}


@admin.register(PromptTemplate)
class PromptTemplateAdmin(admin.ModelAdmin):
    form = PromptTemplateAdminForm
    list_display = ["name", "slug", "temperature", "max_tokens", "is_default", "updated_at"]
    list_filter = ["is_default"]
    search_fields = ["name", "slug", "system_prompt"]
    prepopulated_fields = {"slug": ["name"]}

    def save_model(self, request, obj, form, change):
        # Through the services: they keep one default and invalidate the template cache.
        fields = {name: form.cleaned_data[name] for name in template_services.EDITABLE if name in form.cleaned_data}
        if change:
            changed = {k: v for k, v in fields.items() if k in form.changed_data}
            template_services.template_update(template=obj, **changed)
        else:
            obj.pk = template_services.template_create(**fields).pk

    def delete_model(self, request, obj):
        template_services.template_delete(template=obj)


class DocumentInline(admin.TabularInline):
    model = Document
    fields = ["title", "source_type", "status", "progress", "chunk_count", "updated_at"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        # Documents are added through the API or `manage.py ingest`, which validate and ingest them.
        return False


class BotAdminForm(forms.ModelForm):
    """Runs the services' field cleaners so that admin shows their errors on the form."""

    class Meta:
        model = Bot
        fields = ["owner", *bot_services.EDITABLE]

    def clean(self):
        cleaned = super().clean()
        for name in ("allowed_origins", "suggestions", "theme", "configuration"):
            if name in cleaned:
                try:
                    cleaned[name] = bot_services.bot_field_clean(name, cleaned[name])
                except ValidationFailed as exc:
                    self.add_error(name, exc.detail)
        return cleaned


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotAdminForm
    list_display = [
        "name",
        "owner",
        "status",
        "provider",
        "document_count",
        "chunk_count",
        "tokens_today",
        "created_at",
    ]
    list_filter = ["status", "provider"]
    search_fields = ["name", "owner__email", "public_key"]
    list_select_related = ["owner", "template"]
    raw_id_fields = ["owner"]
    readonly_fields = ["public_key", "identity_secret", "chunk_count", "created_at", "updated_at"]
    # Adds the embed snippet and a live preview of the widget under the fields.
    change_form_template = "admin/bots/bot/change_form.html"
    inlines = [DocumentInline]
    actions = ["rotate_keys"]
    fieldsets = (
        (None, {"fields": ("owner", "name", "description", "status")}),
        (
            "Conversation",
            {"fields": ("welcome_message", "suggestions", "template", "provider", "model", "temperature")},
        ),
        (
            "Embedding",
            {"fields": ("public_key", "identity_secret", "allowed_origins", "theme", "configuration")},
        ),
        ("Knowledge", {"fields": ("chunk_count", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return bot_queryset_with_usage_today(super().get_queryset(request))

    @admin.display(ordering="tokens_today", description="tokens today / budget")
    def tokens_today(self, bot):
        budget, _ = limits_for(bot)
        used = intcomma(bot.tokens_today)
        if not budget:
            return used
        if bot.tokens_today >= budget:
            return format_html('<strong style="color:#b91c1c">{} / {} (spent)</strong>', used, intcomma(budget))
        return f"{used} / {intcomma(budget)}"

    @admin.display(ordering="document_count", description="documents")
    def document_count(self, bot):
        return bot.document_count

    def change_view(self, request, object_id, form_url="", extra_context=None):
        bot = self.get_object(request, object_id)
        if bot is not None:
            extra_context = {
                **(extra_context or {}),
                "embed_snippet": embed_snippet(bot, request),
                "preview_url": reverse("widget-preview", args=[bot.pk]),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        # Through the services, so origins, theme and configuration are validated as in the API.
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in bot_services.EDITABLE}
        if change:
            bot_services.bot_update(bot=obj, **fields)
        else:
            created = bot_services.bot_create(owner=form.cleaned_data["owner"], name=form.cleaned_data["name"], **{
                name: value for name, value in fields.items() if name != "name"
            })  # fmt: skip
            obj.pk = created.pk

    def delete_model(self, request, obj):
        bot_services.bot_delete(bot=obj)

    def delete_queryset(self, request, queryset):
        for bot in queryset:
            bot_services.bot_delete(bot=bot)

    @admin.action(description="Rotate public key and identity secret")
    def rotate_keys(self, request, queryset):
        for bot in queryset:
            bot_services.bot_rotate_keys(bot=bot)
        self.message_user(request, f"Rotated keys of {queryset.count()} bot(s); update their embed codes.")


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "bot", "source_type", "status_badge", "progress_bar", "chunk_count", "updated_at"]
    list_filter = ["status", "source_type"]
    search_fields = ["title", "original_filename", "url", "bot__name"]
    list_select_related = ["bot"]
    readonly_fields = [
        "bot",
        "source_type",
        "original_filename",
        "file",
        "content_type",
        "size_bytes",
        "url",
        "content_hash",
        "status",
        "progress",
        "error",
        "chunk_count",
        "metadata",
        "last_synced_at",
        "created_at",
        "updated_at",
    ]
    fields = ["title", *readonly_fields]
    actions = ["reingest", "resync"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, document):
        colours = {"ready": "#15803d", "error": "#b91c1c", "processing": "#1d4ed8", "pending": "#6b7280"}
        return format_html(
            '<span style="color:{};font-weight:600" title="{}">{}</span>',
            colours.get(document.status, "#000"),
            document.error,
            document.get_status_display(),
        )

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, document):
        return format_html('<progress max="100" value="{}"></progress> {}%', document.progress, document.progress)

    def delete_model(self, request, obj):
        document_services.document_delete(document=obj)

    def delete_queryset(self, request, queryset):
        for document in queryset:
            document_services.document_delete(document=document)

    @admin.action(description="Re-ingest (extract, chunk and embed again)")
    def reingest(self, request, queryset):
        for document in queryset:
            document_services.document_reingest(document=document)
        self.message_user(request, f"Scheduled {queryset.count()} document(s) for re-ingestion.")

    @admin.action(description="Re-sync web pages (unchanged pages re-embed nothing)")
    def resync(self, request, queryset):
        pages = queryset.filter(source_type=Document.SourceType.URL)
        for document in pages:
            document_services.document_resync(document=document)
        skipped = queryset.count() - pages.count()
        self.message_user(request, f"Scheduled {pages.count()} page(s) for re-sync.")
        if skipped:
            self.message_user(request, f"Skipped {skipped} document(s) that are not web pages.", messages.WARNING)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["document", "position", "token_count", "short_text"]
    list_select_related = ["document"]
    search_fields = ["text"]
    raw_id_fields = ["bot", "document"]
    exclude = ["embedding"]
    readonly_fields = ["bot", "document", "position", "text", "token_count", "text_hash", "metadata"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="text")
    def short_text(self, chunk):
        return chunk.text[:120]
