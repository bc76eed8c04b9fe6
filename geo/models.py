"""Service areas: the neighbourhoods a business serves, with a radius around a centre."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class ServiceArea(models.Model):
    name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, default="Chennai")
    latitude = models.FloatField(validators=[MinValueValidator(-90.0), MaxValueValidator(90.0)])
    longitude = models.FloatField(validators=[MinValueValidator(-180.0), MaxValueValidator(180.0)])
    # A point within this many km of the centre counts as inside the area.
    radius_km = models.FloatField(default=3.0, validators=[MinValueValidator(0.1), MaxValueValidator(500.0)])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["city", "name"]
        constraints = [models.UniqueConstraint(fields=["city", "name"], name="service_area_unique_name")]

    def __str__(self) -> str:
        return f"{self.name}, {self.city}"
