"""Owner REST API of bots, documents and search. Thin: validate, call a service, serialise."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from bots import selectors
from bots.cors import cors_allow
from bots.models import Bot, Document, PromptTemplate
from bots.services import bots as bot_services
from bots.services import documents as document_services
from bots.services import templates as template_services
from bots.widget import embed_snippet, widget_config_get
from chatbase.core.clientip import client_ip_from_request
from chatbase.core.errors import NotFound, ValidationFailed
from chatbase.core.pagination import PageNumberPagination
from chatbase.core.ratelimit import Rate, rate_limit_hit


class BotOutputSerializer(serializers.ModelSerializer):
    template = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    document_count = serializers.IntegerField(read_only=True, default=0)
    embed_snippet = serializers.SerializerMethodField()

    class Meta:
        model = Bot
        fields = [
            "id",
            "name",
            "description",
            "welcome_message",
            "template",
            "provider",
            "model",
            "temperature",
            "status",
            "public_key",
            "allowed_origins",
            "suggestions",
            "theme",
            "configuration",
            "chunk_count",
            "document_count",
            "embed_snippet",
            "created_at",
            "updated_at",
        ]

    def get_embed_snippet(self, bot) -> str:
        return embed_snippet(bot, self.context["request"])


class BotDetailOutputSerializer(BotOutputSerializer):
    class Meta(BotOutputSerializer.Meta):
        # The secret that signs identity-verification hashes: its owner needs it on
        # their server, so it is shown on the detail only, never in lists.
        fields = [*BotOutputSerializer.Meta.fields, "identity_secret"]


class BotInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    welcome_message = serializers.CharField(required=False, allow_blank=True, max_length=500)
    template = serializers.SlugRelatedField(
        slug_field="slug", queryset=PromptTemplate.objects.all(), required=False, allow_null=True
    )
    provider = serializers.ChoiceField(choices=Bot.Provider.choices, required=False, allow_blank=True)
    model = serializers.CharField(required=False, allow_blank=True, max_length=100)
    temperature = serializers.FloatField(required=False, min_value=0.0, max_value=2.0)
    status = serializers.ChoiceField(choices=Bot.Status.choices, required=False)
    allowed_origins = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    # Blank entries are dropped by the service (forms often send an empty last line).
    suggestions = serializers.ListField(child=serializers.CharField(max_length=200, allow_blank=True), required=False)
    theme = serializers.JSONField(required=False)
    configuration = serializers.JSONField(required=False)


class BotListCreateApi(APIView):
    @extend_schema(responses=BotOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.bot_list(owner=request.user), request, view=self)
        data = BotOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(request=BotInputSerializer, responses={201: BotDetailOutputSerializer})
    def post(self, request):
        data = BotInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        bot = bot_services.bot_create(owner=request.user, **data.validated_data)
        bot = selectors.bot_get(owner=request.user, bot_id=bot.pk)
        return Response(BotDetailOutputSerializer(bot, context={"request": request}).data, status=201)


class BotDetailApi(APIView):
    @extend_schema(responses=BotDetailOutputSerializer)
    def get(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        return Response(BotDetailOutputSerializer(bot, context={"request": request}).data)

    @extend_schema(request=BotInputSerializer(partial=True), responses=BotDetailOutputSerializer)
    def patch(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        data = BotInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        bot_services.bot_update(bot=bot, **data.validated_data)
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        return Response(BotDetailOutputSerializer(bot, context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        bot_services.bot_delete(bot=bot)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BotRotateKeysApi(APIView):
    @extend_schema(request=None, responses=BotDetailOutputSerializer)
    def post(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        bot_services.bot_rotate_keys(bot=bot)
        return Response(BotDetailOutputSerializer(bot, context={"request": request}).data)


class DocumentOutputSerializer(serializers.ModelSerializer):
    bot_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Document
        fields = [
            "id",
            "bot_id",
            "title",
            "source_type",
            "original_filename",
            "content_type",
            "size_bytes",
            "url",
            "status",
            "progress",
            "error",
            "chunk_count",
            "last_synced_at",
            "created_at",
            "updated_at",
        ]


class DocumentInputSerializer(serializers.Serializer):
    """Exactly one of `file` (multipart), `text` or `url`; `title` is optional."""

    title = serializers.CharField(required=False, allow_blank=True, max_length=300)
    file = serializers.FileField(required=False, allow_empty_file=True)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    url = serializers.URLField(required=False, max_length=2000)

    def validate(self, attrs):
        given = [key for key in ("file", "text", "url") if key in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("Send exactly one of: a multipart 'file', 'text' or 'url'.")
        return attrs


class DocumentListCreateApi(APIView):
    @extend_schema(responses=DocumentOutputSerializer(many=True))
    def get(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.document_list(bot=bot), request, view=self)
        return paginator.get_paginated_response(DocumentOutputSerializer(page, many=True).data)

    @extend_schema(request=DocumentInputSerializer, responses={201: DocumentOutputSerializer})
    def post(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        data = DocumentInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        document = document_services.document_create(
            bot=bot,
            title=values.get("title", ""),
            upload=values.get("file"),
            text=values.get("text"),
            url=values.get("url"),
        )
        # Without a broker ingestion ran in-process already: show its outcome.
        document.refresh_from_db()
        return Response(DocumentOutputSerializer(document).data, status=status.HTTP_201_CREATED)


class DocumentDetailApi(APIView):
    @extend_schema(responses=DocumentOutputSerializer)
    def get(self, request, document_id: int):
        document = selectors.document_get(owner=request.user, document_id=document_id)
        return Response(DocumentOutputSerializer(document).data)

    @extend_schema(responses={204: None})
    def delete(self, request, document_id: int):
        document = selectors.document_get(owner=request.user, document_id=document_id)
        document_services.document_delete(document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentResyncApi(APIView):
    """Re-fetch a web page document (unchanged pages re-embed nothing) or re-ingest a file."""

    @extend_schema(request=None, responses={202: DocumentOutputSerializer})
    def post(self, request, document_id: int):
        document = selectors.document_get(owner=request.user, document_id=document_id)
        if document.source_type == Document.SourceType.URL:
            document_services.document_resync(document=document)
        else:
            # Not forced: content whose text is unchanged re-embeds nothing.
            document_services.document_reingest(document=document, force=False)
        document.refresh_from_db()
        return Response(DocumentOutputSerializer(document).data, status=status.HTTP_202_ACCEPTED)


class SearchInputSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=1000)
    k = serializers.IntegerField(required=False, default=5, min_value=1, max_value=50)
    mode = serializers.ChoiceField(choices=selectors.SEARCH_MODES, required=False, default="hybrid")


class SearchResultSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    document_title = serializers.CharField()
    text = serializers.CharField()
    score = serializers.FloatField()
    vector_score = serializers.FloatField(allow_null=True)
    vector_rank = serializers.IntegerField(allow_null=True)
    text_rank = serializers.IntegerField(allow_null=True)
    metadata = serializers.JSONField()


class SearchOutputSerializer(serializers.Serializer):
    results = SearchResultSerializer(many=True)


class BotSearchApi(APIView):
    @extend_schema(
        request=SearchInputSerializer,
        responses={200: SearchOutputSerializer, 404: OpenApiResponse(description="No such bot")},
    )
    def post(self, request, bot_id: int):
        bot = selectors.bot_get(owner=request.user, bot_id=bot_id)
        data = SearchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        query = data.validated_data["query"].strip()
        if not query:
            raise ValidationFailed("query: may not be blank.")
        results = selectors.chunk_search(
            bot=bot, query=query, k=data.validated_data["k"], mode=data.validated_data["mode"]
        )
        return Response(SearchOutputSerializer({"results": results}).data)


class TemplateOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = PromptTemplate
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "system_prompt",
            "temperature",
            "max_tokens",
            "personality_traits",
            "is_default",
            "selection_rules",
            "created_at",
            "updated_at",
        ]


class TemplateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=100)
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    system_prompt = serializers.CharField(max_length=20_000)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    max_tokens = serializers.IntegerField(min_value=16, max_value=8000, required=False)
    personality_traits = serializers.ListField(child=serializers.CharField(max_length=50), required=False)
    is_default = serializers.BooleanField(required=False)
    selection_rules = serializers.JSONField(required=False)


class TemplateListCreateApi(APIView):
    """Every owner can read the templates; only staff may change them (they are shared by all bots)."""

    def get_permissions(self):
        return [IsAdminUser()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(responses=TemplateOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.template_list(), request, view=self)
        return paginator.get_paginated_response(TemplateOutputSerializer(page, many=True).data)

    @extend_schema(request=TemplateInputSerializer, responses={201: TemplateOutputSerializer})
    def post(self, request):
        data = TemplateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        template = template_services.template_create(**data.validated_data)
        return Response(TemplateOutputSerializer(template).data, status=status.HTTP_201_CREATED)


class TemplateDetailApi(APIView):
    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method == "GET" else [IsAdminUser()]

    @extend_schema(responses=TemplateOutputSerializer)
    def get(self, request, slug: str):
        return Response(TemplateOutputSerializer(selectors.template_get(slug=slug)).data)

    @extend_schema(request=TemplateInputSerializer(partial=True), responses=TemplateOutputSerializer)
    def patch(self, request, slug: str):
        template = selectors.template_get(slug=slug)
        data = TemplateInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        template = template_services.template_update(template=template, **data.validated_data)
        return Response(TemplateOutputSerializer(template).data)

    @extend_schema(responses={204: None})
    def delete(self, request, slug: str):
        template_services.template_delete(template=selectors.template_get(slug=slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    parameters = serializers.JSONField()
    writes = serializers.BooleanField(help_text="Offered only to authenticated owners, never to visitors.")
    offered_to_visitors = serializers.SerializerMethodField()

    def get_offered_to_visitors(self, spec) -> bool:
        return spec.offered_to_visitors


class ToolListApi(APIView):
    """The tools models can call (function calling), shared by every provider."""

    @extend_schema(responses=ToolSerializer(many=True))
    def get(self, request):
        from bots.llm import tools

        return Response({"results": ToolSerializer(tools.all_specs(), many=True).data})


class WidgetThemeSerializer(serializers.Serializer):
    color = serializers.CharField()
    position = serializers.ChoiceField(choices=["right", "left"])
    title = serializers.CharField(allow_blank=True)
    avatar_url = serializers.CharField(allow_blank=True)
    launcher_text = serializers.CharField(allow_blank=True)


class WidgetConfigOutputSerializer(serializers.Serializer):
    public_key = serializers.CharField()
    name = serializers.CharField()
    title = serializers.CharField()
    welcome = serializers.CharField(allow_blank=True)
    suggestions = serializers.ListField(child=serializers.CharField())
    theme = WidgetThemeSerializer()
    lead_form = serializers.BooleanField(help_text="Ask for name and e-mail (lead.submit) before the first message.")
    require_consent = serializers.BooleanField(help_text="The lead form asks for consent to be contacted.")
    identity_required = serializers.BooleanField(help_text="The socket refuses visitors without data-user-hash.")


class WidgetConfigApi(APIView):
    """The widget's public view of a bot (no authentication). Browsers on origins
    outside the bot's allowed_origins get no CORS headers, so cannot read it."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: WidgetConfigOutputSerializer, 404: OpenApiResponse(description="No such bot")})
    def get(self, request, public_key: str):
        ip = client_ip_from_request(request) or "unknown"
        rate_limit_hit(key=f"widget-config:{ip}", rate=Rate.parse(settings.WIDGET_CONFIG_RATE_PER_IP))
        found = widget_config_get(public_key=public_key)
        if found is None:
            raise NotFound("No such bot.")
        config, origins = found
        response = Response(WidgetConfigOutputSerializer(config).data)
        # Browsers may reuse it briefly; an owner's edit shows within a minute.
        response["Cache-Control"] = "public, max-age=60"
        return cors_allow(response, request=request, allowed_origins=origins)
