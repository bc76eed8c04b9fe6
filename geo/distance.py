"""Great-circle distance (haversine) in Python and as a database expression."""

from __future__ import annotations

import math

from django.db.models import F, FloatField, Value
from django.db.models.expressions import Func
from django.db.models.functions import ASin, Cos, Least, Power, Radians, Sin, Sqrt

# Mean Earth radius (IUGG), the usual sphere for haversine.
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lng2 - lng1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    # Rounding can push `a` a hair above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def haversine_expression(lat: float, lng: float, lat_field: str = "latitude", lng_field: str = "longitude") -> Func:
    """The same formula in SQL: the distance from (lat, lng) to each row's point, in km."""
    lat_v, lng_v = Value(float(lat), output_field=FloatField()), Value(float(lng), output_field=FloatField())
    d_phi = Radians(F(lat_field)) - Radians(lat_v)
    d_lambda = Radians(F(lng_field)) - Radians(lng_v)
    a = Power(Sin(d_phi / 2), 2) + Cos(Radians(lat_v)) * Cos(Radians(F(lat_field))) * Power(Sin(d_lambda / 2), 2)
    return Value(2 * EARTH_RADIUS_KM, output_field=FloatField()) * ASin(
        Sqrt(Least(Value(1.0, output_field=FloatField()), a))
    )
