"""Service areas over the API: the list, and the nearest one to a point."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chatbase.core.pagination import PageNumberPagination
from geo import selectors
from geo.models import ServiceArea


class ServiceAreaOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ServiceArea
        fields = ["id", "name", "city", "latitude", "longitude", "radius_km"]


class NearestInputSerializer(serializers.Serializer):
    lat = serializers.FloatField(min_value=-90, max_value=90)
    lng = serializers.FloatField(min_value=-180, max_value=180)


class NearestOutputSerializer(serializers.Serializer):
    area = ServiceAreaOutputSerializer(allow_null=True)
    distance_km = serializers.FloatField(allow_null=True)
    inside = serializers.BooleanField()


class ServiceAreaListApi(APIView):
    @extend_schema(responses=ServiceAreaOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.service_area_list(), request, view=self)
        return paginator.get_paginated_response(ServiceAreaOutputSerializer(page, many=True).data)


class NearestAreaApi(APIView):
    @extend_schema(parameters=[NearestInputSerializer], responses=NearestOutputSerializer)
    def get(self, request):
        data = NearestInputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        nearest = selectors.service_area_nearest(
            latitude=data.validated_data["lat"], longitude=data.validated_data["lng"]
        )
        if nearest is None:
            return Response({"area": None, "distance_km": None, "inside": False})
        return Response(
            NearestOutputSerializer(
                {"area": nearest.area, "distance_km": round(nearest.distance_km, 3), "inside": nearest.inside}
            ).data
        )
