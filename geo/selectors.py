"""Reads of service areas: the list, and the nearest one to a point."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from geo.distance import haversine_expression
from geo.models import ServiceArea


@dataclass(frozen=True)
class NearestArea:
    area: ServiceArea
    distance_km: float

    @property
    def inside(self) -> bool:
        return self.distance_km <= self.area.radius_km


def service_area_list(*, active_only: bool = True) -> QuerySet[ServiceArea]:
    areas = ServiceArea.objects.all()
    return areas.filter(is_active=True) if active_only else areas


def service_area_nearest(*, latitude: float, longitude: float) -> NearestArea | None:
    """The active area whose centre is closest to the point (great-circle distance).

    Computed in PostgreSQL: one query whatever the number of areas, and nothing
    loaded into Python but the winner. A city has tens of areas, so the sequential
    scan this needs costs microseconds; a spatial index would only pay off with
    many thousands (docs/leads.md).
    """
    area = (
        service_area_list()
        .annotate(distance_km=haversine_expression(latitude, longitude))
        .order_by("distance_km", "pk")
        .first()
    )
    if area is None:
        return None
    return NearestArea(area=area, distance_km=area.distance_km)


def service_area_by_name(*, name: str) -> ServiceArea | None:
    """An active area by name, ignoring case, spaces and dots ("t nagar" is "T. Nagar")."""
    wanted = "".join(ch for ch in name.casefold() if ch.isalnum())
    if not wanted:
        return None
    for area in service_area_list():
        if "".join(ch for ch in area.name.casefold() if ch.isalnum()) == wanted:
            return area
    return None
