"""REST and SSE chat for owners, and conversation transcripts."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from bots import selectors as bot_selectors
from chatbase.core.errors import ChatbaseError, error_payload
from chatbase.core.pagination import PageNumberPagination
from chatbase.core.ratelimit import Rate, rate_limit_hit
from conversations import selectors, services
from conversations.chat import AnswerDelta, AnswerDone, answer_collect, answer_stream
from conversations.consumers import public_sources
from conversations.models import Conversation, Message


class MessageSerializer(serializers.ModelSerializer):
    provider = serializers.CharField(read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "text",
            "sources",
            "provider",
            "providers",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_ms",
            "first_token_ms",
            "incomplete",
            "sender",
            "created_at",
        ]


class ConversationSerializer(serializers.ModelSerializer):
    template = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "bot_id",
            "visitor_id",
            "channel",
            "status",
            "end_reason",
            "template",
            "profile",
            "message_count",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "summary",
            "started_at",
            "last_activity_at",
            "ended_at",
        ]


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True, read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]


def reply_payload(conversation: Conversation, message: Message) -> dict:
    return {
        "conversation_id": conversation.pk,
        "message": {
            "id": message.pk,
            "role": message.role,
            "text": message.text,
            "sources": public_sources(message.sources),
            "provider": message.provider,
            "incomplete": message.incomplete,
        },
    }


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_stream(conversation: Conversation, owner):
    """event: delta {"delta"} ... then event: done {conversation_id, message} or event: error {detail, code}."""
    try:
        async for event in answer_stream(conversation=conversation, owner=owner):
            if isinstance(event, AnswerDelta):
                yield sse("delta", {"delta": event.text})
            elif isinstance(event, AnswerDone):
                yield sse("done", reply_payload(conversation, event.message))
    except ChatbaseError as exc:
        _, body, _ = error_payload(exc)
        yield sse("error", body)


def wants_event_stream(request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def reply_response(request, conversation: Conversation, *, owner=None):
    """Answer the conversation's latest user message: SSE when the client accepts it, else JSON."""
    if wants_event_stream(request):
        response = StreamingHttpResponse(sse_stream(conversation, owner), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return response
    message = async_to_sync(answer_collect)(conversation=conversation, owner=owner)
    return Response(reply_payload(conversation, message))


class EventStreamRenderer(BaseRenderer):
    """Lets clients that accept only text/event-stream negotiate the chat view.

    The answer itself is a StreamingHttpResponse; what DRF renders with this is an
    error raised before streaming starts, sent as one `event: error`.
    """

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return sse("error", data if isinstance(data, dict) else {"detail": str(data), "code": "error"}).encode()


class ChatOutputSerializer(serializers.Serializer):
    class MessageOut(serializers.Serializer):
        id = serializers.IntegerField()
        role = serializers.CharField()
        text = serializers.CharField()
        sources = serializers.JSONField()
        provider = serializers.CharField()
        incomplete = serializers.BooleanField()

    conversation_id = serializers.IntegerField()
    message = MessageOut()


class BotChatApi(APIView):
    """Chat with one of your bots. `Accept: text/event-stream` streams the answer as SSE."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    class InputSerializer(serializers.Serializer):
        message = serializers.CharField(trim_whitespace=False)
        conversation_id = serializers.IntegerField(required=False, min_value=1)
        client_id = serializers.CharField(required=False, allow_blank=True, max_length=64)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OpenApiResponse(ChatOutputSerializer, description="JSON, or SSE events delta/done/error"),
            404: OpenApiResponse(description="No such bot or conversation"),
        },
    )
    def post(self, request, bot_id: int):
        bot = bot_selectors.bot_get(owner=request.user, bot_id=bot_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rate_limit_hit(key=f"chat-owner:{request.user.pk}", rate=Rate.parse(settings.CHAT_RATE_PER_IP))
        conversation = services.conversation_for_owner(
            bot=bot, owner=request.user, conversation_id=data.validated_data.get("conversation_id")
        )
        services.message_user_add(
            conversation=conversation,
            text=data.validated_data["message"],
            client_id=data.validated_data.get("client_id", ""),
        )
        return reply_response(request, conversation, owner=request.user)


class BotConversationListApi(APIView):
    @extend_schema(responses=ConversationSerializer(many=True))
    def get(self, request, bot_id: int):
        bot = bot_selectors.bot_get(owner=request.user, bot_id=bot_id)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.conversation_list(bot=bot), request, view=self)
        return paginator.get_paginated_response(ConversationSerializer(page, many=True).data)


class ConversationDetailApi(APIView):
    @extend_schema(responses=ConversationDetailSerializer)
    def get(self, request, conversation_id: int):
        conversation = selectors.conversation_get(owner=request.user, conversation_id=conversation_id)
        return Response(ConversationDetailSerializer(conversation).data)
