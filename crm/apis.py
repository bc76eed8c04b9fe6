"""HTTP endpoints of the crm app: inbound webhooks, HubSpot OAuth, memory rules."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from bots import selectors as bot_selectors
from chatbase.core.errors import NotAuthenticated, ValidationFailed
from chatbase.core.pagination import PageNumberPagination
from crm import selectors
from crm.google import TokenInvalid, verify_pubsub_token
from crm.models import MemoryRule
from crm.services import google as google_services
from crm.services import hubspot as hubspot_services
from crm.services import rules as rule_services
from crm.services import webhooks as webhook_services
from crm.signatures import SignatureInvalid, signed_uri, verify_hubspot_v3


def json_body(request) -> object:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The body is not valid JSON.", code="invalid_json") from exc


class WebhookResultSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    replays = serializers.IntegerField()


class WebhookApi(APIView):
    """Base of the inbound webhooks: no session or token, the signature is the authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class HubSpotWebhookApi(WebhookApi):
    @extend_schema(
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={200: WebhookResultSerializer},
        description="HubSpot webhook deliveries, signed with signature v3 (see docs/crm.md).",
    )
    def post(self, request):
        # The raw bytes, before anything parses them: the signature covers them exactly.
        body = request.body
        try:
            verify_hubspot_v3(
                secret=settings.HUBSPOT_CLIENT_SECRET,
                method=request.method,
                uri=signed_uri(request._request),
                body=body,
                signature=request.headers.get("X-HubSpot-Signature-v3"),
                timestamp=request.headers.get("X-HubSpot-Request-Timestamp"),
                max_age_seconds=settings.HUBSPOT_WEBHOOK_MAX_AGE_SECONDS,
                max_future_seconds=settings.HUBSPOT_WEBHOOK_MAX_FUTURE_SECONDS,
            )
        except SignatureInvalid as exc:
            raise NotAuthenticated(str(exc), code="invalid_signature") from exc
        result = webhook_services.hubspot_webhook_receive(events=json_body(request))
        return Response(WebhookResultSerializer(result).data)


class GmailWebhookApi(WebhookApi):
    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: WebhookResultSerializer},
        description="Gmail notifications pushed by Google Pub/Sub with an OIDC bearer token (see docs/crm.md).",
    )
    def post(self, request):
        try:
            verify_pubsub_token(request.headers.get("Authorization"))
        except TokenInvalid as exc:
            raise NotAuthenticated(str(exc), code="invalid_token") from exc
        return Response(WebhookResultSerializer(google_services.gmail_push_receive(body=json_body(request))).data)


class CalendarWebhookApi(WebhookApi):
    @extend_schema(
        request=None,
        responses={200: WebhookResultSerializer},
        description="Google Calendar push notifications, authenticated by X-Goog-Channel-Token.",
    )
    def post(self, request):
        return Response(WebhookResultSerializer(google_services.calendar_push_receive(headers=request.headers)).data)


class HubSpotOAuthAuthorizeApi(APIView):
    @extend_schema(responses={302: None}, description="Redirects the owner to HubSpot to connect their account.")
    def get(self, request):
        return HttpResponseRedirect(hubspot_services.hubspot_oauth_authorize_url(owner=request.user))


class HubSpotConnectionSerializer(serializers.Serializer):
    status = serializers.CharField()
    auth_type = serializers.CharField()
    portal_id = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class HubSpotOAuthCallbackApi(APIView):
    # HubSpot sends the browser back here; the signed, single-use state says whose it is.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[OpenApiParameter("code", str), OpenApiParameter("state", str)],
        responses={200: HubSpotConnectionSerializer},
    )
    def get(self, request):
        state = request.query_params.get("state", "")
        if not state:
            raise NotAuthenticated("The OAuth state is missing.", code="invalid_state")
        if request.query_params.get("error"):
            raise ValidationFailed(f"HubSpot: {request.query_params['error']}", code="hubspot_refused")
        connection = hubspot_services.hubspot_oauth_connect(state=state, code=request.query_params.get("code", ""))
        return Response(HubSpotConnectionSerializer(connection).data)


# --- memory rules -----------------------------------------------------------------


class RuleOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = MemoryRule
        fields = ["id", "text", "bot", "event", "action", "params", "enabled", "created_at", "updated_at"]


class RuleInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=1000)
    bot = serializers.IntegerField(required=False, allow_null=True)
    enabled = serializers.BooleanField(required=False)


def _bot_for(request, values: dict):
    bot_id = values.pop("bot", None)
    return None if bot_id is None else bot_selectors.bot_get(owner=request.user, bot_id=bot_id)


class RuleListCreateApi(APIView):
    @extend_schema(responses=RuleOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.memory_rule_list(owner=request.user), request, view=self)
        return paginator.get_paginated_response(RuleOutputSerializer(page, many=True).data)

    @extend_schema(request=RuleInputSerializer, responses={201: RuleOutputSerializer})
    def post(self, request):
        data = RuleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        bot = _bot_for(request, values)
        rule = rule_services.memory_rule_create(owner=request.user, bot=bot, **values)
        return Response(RuleOutputSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailApi(APIView):
    @extend_schema(responses=RuleOutputSerializer)
    def get(self, request, rule_id: int):
        return Response(RuleOutputSerializer(selectors.memory_rule_get(owner=request.user, rule_id=rule_id)).data)

    @extend_schema(request=RuleInputSerializer(partial=True), responses=RuleOutputSerializer)
    def patch(self, request, rule_id: int):
        rule = selectors.memory_rule_get(owner=request.user, rule_id=rule_id)
        data = RuleInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "bot" in values:
            values["bot"] = _bot_for(request, values)
        rule = rule_services.memory_rule_update(rule=rule, **values)
        return Response(RuleOutputSerializer(rule).data)

    @extend_schema(responses={204: None})
    def delete(self, request, rule_id: int):
        rule_services.memory_rule_delete(rule=selectors.memory_rule_get(owner=request.user, rule_id=rule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
