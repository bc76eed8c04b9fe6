"""Chatbot sessions for an external app's users: /api/v1/sessions/ (docs/matchmaking.md).

An owner's app creates a session for one of its users (user_id, profile, optional
template and bot), sends the user's messages and gets the bot's replies (JSON, or
SSE with `Accept: text/event-stream`), reads the session's counters and ends it.
The personalities are listed by /api/v1/templates/.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from chatbase.core.pagination import PageNumberPagination
from chatbase.core.ratelimit import Rate, rate_limit_hit
from conversations import services as conversation_services
from conversations.apis import ChatOutputSerializer, EventStreamRenderer, reply_response
from conversations.matchmaking import selectors, services
from conversations.models import Conversation


class SessionOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.SerializerMethodField()
    template = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    tokens_used = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField()
    welcome = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "user_id",
            "bot_id",
            "template",
            "status",
            "end_reason",
            "source",
            "profile",
            "welcome",
            "message_count",
            "input_tokens",
            "output_tokens",
            "tokens_used",
            "cost_usd",
            "started_at",
            "last_activity_at",
            "ended_at",
        ]

    def get_user_id(self, obj: Conversation) -> str:
        return services.session_user_id(obj)

    def get_tokens_used(self, obj: Conversation) -> int:
        return obj.input_tokens + obj.output_tokens

    def get_source(self, obj: Conversation) -> str:
        return (obj.metadata or {}).get("source", "")

    def get_welcome(self, obj: Conversation) -> str:
        return services.session_welcome(obj)


class SessionListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        user_id = serializers.CharField(max_length=services.MAX_USER_ID)
        profile = serializers.JSONField(required=False, default=dict)
        template = serializers.SlugField(required=False, max_length=100)
        bot_id = serializers.IntegerField(required=False, min_value=1)

    @extend_schema(
        parameters=[OpenApiParameter("user_id", str, description="Only this user's sessions")],
        responses=SessionOutputSerializer(many=True),
    )
    def get(self, request):
        sessions = selectors.session_list(owner=request.user, user_id=request.query_params.get("user_id"))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionOutputSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: SessionOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user_id = services.user_id_clean(data.validated_data["user_id"])
        rate_limit_hit(
            key=f"match-session:{request.user.pk}:{user_id}", rate=Rate.parse(settings.MATCH_JOIN_RATE_PER_USER)
        )
        bot = selectors.session_bot(owner=request.user, bot_id=data.validated_data.get("bot_id"))
        session = services.session_start(
            user_id=user_id,
            profile=data.validated_data["profile"],
            template=data.validated_data.get("template"),
            bot=bot,
            source="api",
        )
        return Response(SessionOutputSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailApi(APIView):
    @extend_schema(responses=SessionOutputSerializer)
    def get(self, request, session_id: int):
        session = selectors.session_get(owner=request.user, session_id=session_id)
        return Response(SessionOutputSerializer(session).data)


class SessionMessageApi(APIView):
    """Send the user's message; the reply comes back whole, or as SSE with `Accept: text/event-stream`."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False)
        client_id = serializers.CharField(required=False, allow_blank=True, max_length=64)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OpenApiResponse(ChatOutputSerializer, description="JSON, or SSE events delta/done/error"),
            404: OpenApiResponse(description="No such session"),
        },
    )
    def post(self, request, session_id: int):
        session = selectors.session_get(owner=request.user, session_id=session_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rate_limit_hit(
            key=f"match-message:{request.user.pk}:{services.session_user_id(session)}",
            rate=Rate.parse(settings.MATCH_RATE_PER_USER),
        )
        # Stored first (and a paused session resumes); whatever fails next, the message stays.
        conversation_services.message_user_add(
            conversation=session, text=data.validated_data["text"], client_id=data.validated_data.get("client_id", "")
        )
        return reply_response(request, session)


class SessionEndApi(APIView):
    @extend_schema(request=None, responses=SessionOutputSerializer)
    def post(self, request, session_id: int):
        session = selectors.session_get(owner=request.user, session_id=session_id)
        session = services.session_end(conversation=session, reason="ended_by_app")
        return Response(SessionOutputSerializer(session).data)
