"""Owner REST API of leads: list (filtered), detail, edit, CSV export. Thin views."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chatbase.core.pagination import PageNumberPagination
from leads import selectors, services
from leads.csv_export import csv_lines
from leads.models import Lead, LeadScoreEvent


class LeadFilterSerializer(serializers.Serializer):
    bot = serializers.IntegerField(required=False, min_value=1)
    status = serializers.ChoiceField(choices=Lead.Status.choices, required=False)
    score_min = serializers.IntegerField(required=False, min_value=0, max_value=100)
    score_max = serializers.IntegerField(required=False, min_value=0, max_value=100)
    area = serializers.IntegerField(required=False, min_value=1, help_text="Nearest service area id.")
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    search = serializers.CharField(required=False, max_length=200, help_text="E-mail, name, phone or company.")

    def validate(self, data):
        low, high = data.get("score_min"), data.get("score_max")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError("score_min must not exceed score_max.")
        return data

    def filters(self) -> selectors.LeadFilters:
        d = self.validated_data
        return selectors.LeadFilters(
            bot_id=d.get("bot"),
            status=d.get("status"),
            score_min=d.get("score_min"),
            score_max=d.get("score_max"),
            area_id=d.get("area"),
            created_after=d.get("created_after"),
            created_before=d.get("created_before"),
            search=d.get("search", "").strip(),
        )


def _filters(request) -> selectors.LeadFilters:
    data = LeadFilterSerializer(data=request.query_params)
    data.is_valid(raise_exception=True)
    return data.filters()


class ScoreLineSerializer(serializers.Serializer):
    marker = serializers.CharField()
    points = serializers.IntegerField()
    evidence = serializers.CharField()


class AreaRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class LeadOutputSerializer(serializers.ModelSerializer):
    bot_name = serializers.CharField(source="bot.name", read_only=True)
    score_breakdown = ScoreLineSerializer(many=True, read_only=True)
    nearest_area = AreaRefSerializer(read_only=True, allow_null=True)
    conversation_ids = serializers.SerializerMethodField()

    class Meta:
        model = Lead
        fields = [
            "id",
            "bot",
            "bot_name",
            "email",
            "name",
            "phone",
            "company",
            "status",
            "score",
            "score_breakdown",
            "consent",
            "source",
            "country",
            "region",
            "city",
            "latitude",
            "longitude",
            "nearest_area",
            "distance_km",
            "hubspot_id",
            "conversation_ids",
            "qualified_at",
            "created_at",
            "updated_at",
        ]

    def get_conversation_ids(self, lead) -> list[int]:
        return sorted(c.pk for c in lead.conversations.all())


class ScoreEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = LeadScoreEvent
        fields = ["marker", "points", "evidence", "message", "score_after", "created_at"]


class LeadDetailOutputSerializer(LeadOutputSerializer):
    score_events = ScoreEventSerializer(many=True, read_only=True)

    class Meta(LeadOutputSerializer.Meta):
        fields = [*LeadOutputSerializer.Meta.fields, "score_events"]


class LeadInputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Lead.Status.choices, required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    company = serializers.CharField(required=False, allow_blank=True, max_length=200)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    email = serializers.CharField(required=False, allow_blank=True, max_length=254)
    consent = serializers.BooleanField(required=False)


class LeadListApi(APIView):
    @extend_schema(parameters=[LeadFilterSerializer], responses=LeadOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        leads = selectors.lead_list(owner=request.user, filters=_filters(request))
        page = paginator.paginate_queryset(leads, request, view=self)
        return paginator.get_paginated_response(LeadOutputSerializer(page, many=True).data)


class LeadDetailApi(APIView):
    @extend_schema(responses=LeadDetailOutputSerializer)
    def get(self, request, lead_id: int):
        lead = selectors.lead_get(owner=request.user, lead_id=lead_id)
        return Response(LeadDetailOutputSerializer(lead).data)

    @extend_schema(request=LeadInputSerializer, responses=LeadDetailOutputSerializer)
    def patch(self, request, lead_id: int):
        lead = selectors.lead_get(owner=request.user, lead_id=lead_id)
        data = LeadInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.lead_update(lead=lead, **data.validated_data)
        return Response(LeadDetailOutputSerializer(selectors.lead_get(owner=request.user, lead_id=lead_id)).data)


class LeadExportApi(APIView):
    @extend_schema(
        parameters=[LeadFilterSerializer],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per lead.")},
    )
    def get(self, request):
        leads = selectors.lead_list(owner=request.user, filters=_filters(request), with_conversations=False)
        response = StreamingHttpResponse(csv_lines(leads.iterator(chunk_size=500)), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="leads-{stamp}.csv"'
        return response
