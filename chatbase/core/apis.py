"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chatbase.core import health, selectors, services
from chatbase.core.pagination import PageNumberPagination

logger = logging.getLogger(__name__)


@require_GET
def health_view(request):
    """Liveness: the process answers. Checks nothing else on purpose."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready_view(request):
    """Readiness: every configured dependency answers; 503 names the one that does not."""
    checks = health.run_checks()
    ok = all(result in ("ok", "disabled") for result in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


@require_GET
def metrics_view(request):
    return ExportToDjangoView(request)


class MeApi(APIView):
    """Who the token or session belongs to: lets an owner check a token works."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        email = serializers.EmailField()
        is_staff = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer)
    def get(self, request):
        return Response(self.OutputSerializer(request.user).data)


class ApiTokenListCreateApi(APIView):
    """An owner's API tokens. The raw token is returned once, on creation."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        prefix = serializers.CharField()
        created_at = serializers.DateTimeField()
        last_used_at = serializers.DateTimeField(allow_null=True)

    class CreatedSerializer(OutputSerializer):
        token = serializers.CharField()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        tokens = selectors.api_token_list(user=request.user)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(tokens, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: CreatedSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = services.api_token_create(user=request.user, name=data.validated_data["name"])
        body = self.OutputSerializer(token).data | {"token": raw}
        return Response(body, status=201)


class ApiTokenDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        token = selectors.api_token_get_for_user(user=request.user, token_id=token_id)
        services.api_token_revoke(token=token)
        return Response(status=204)
