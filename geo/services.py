"""Writes of service areas (admin and the data migration's seed)."""

from __future__ import annotations

from django.db import transaction

from geo import chennai
from geo.models import ServiceArea

EDITABLE = ("name", "city", "latitude", "longitude", "radius_km", "is_active")


@transaction.atomic
def service_area_create(
    *, name: str, latitude: float, longitude: float, city: str = "Chennai", radius_km: float = 3.0, is_active=True
) -> ServiceArea:
    area = ServiceArea(
        name=name, city=city, latitude=latitude, longitude=longitude, radius_km=radius_km, is_active=is_active
    )
    area.full_clean()
    area.save()
    return area


@transaction.atomic
def service_area_update(*, area: ServiceArea, **fields) -> ServiceArea:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise TypeError(f"Not editable: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(area, name, value)
    area.full_clean()
    area.save(update_fields=[*fields, "updated_at"])
    return area


@transaction.atomic
def service_areas_seed_chennai() -> int:
    """Add the shipped Chennai areas that are missing (idempotent); returns how many were added."""
    return chennai.seed(ServiceArea)
