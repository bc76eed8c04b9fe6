"""The `find_nearest_area` tool (read-only: offered to visitors too)."""

from __future__ import annotations

from bots.llm.tools import ToolContext, ToolSpec, register
from chatbase.core.errors import ValidationFailed
from geo import selectors


def area_json(area) -> dict:
    return {
        "id": area.pk,
        "name": area.name,
        "city": area.city,
        "latitude": area.latitude,
        "longitude": area.longitude,
        "radius_km": area.radius_km,
    }


def find_nearest_area(
    context: ToolContext, *, latitude: float | None = None, longitude: float | None = None, place: str = ""
) -> dict:
    if place.strip():
        area = selectors.service_area_by_name(name=place)
        if area is None:
            return {"found": False, "detail": f"{place.strip()!r} is not one of the service areas."}
        latitude, longitude = area.latitude, area.longitude
    if latitude is None or longitude is None:
        raise ValidationFailed("Give latitude and longitude, or the name of a place.")
    nearest = selectors.service_area_nearest(latitude=latitude, longitude=longitude)
    if nearest is None:
        return {"found": False, "detail": "No service areas are configured."}
    return {
        "found": True,
        "area": area_json(nearest.area),
        "distance_km": round(nearest.distance_km, 2),
        "inside": nearest.inside,
    }


FIND_NEAREST_AREA = register(
    ToolSpec(
        name="find_nearest_area",
        description=(
            "Find the service area nearest to a point (latitude and longitude) or to a named neighbourhood, "
            "with the great-circle distance in km and whether the point is inside the area's radius. "
            "Use it when the user asks whether they are served or which branch is closest."
        ),
        parameters={
            "type": "object",
            "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "place": {"type": "string", "maxLength": 100, "description": "A neighbourhood name, e.g. Anna Nagar."},
            },
            "required": [],
            "additionalProperties": False,
        },
        writes=False,
        handler=find_nearest_area,
    )
)
