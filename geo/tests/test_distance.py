import math

import pytest

from geo.distance import haversine_km
from geo.models import ServiceArea
from geo.selectors import service_area_by_name, service_area_list, service_area_nearest


def test_haversine_known_distances():
    assert haversine_km(13.0891, 80.2107, 13.0891, 80.2107) == 0
    # One degree of latitude is ~111.2 km on the mean sphere.
    assert haversine_km(0, 0, 1, 0) == pytest.approx(111.195, abs=0.01)
    # Chennai Central to Bengaluru City railway stations: ~290 km great-circle.
    assert haversine_km(13.0827, 80.2757, 12.9779, 77.5713) == pytest.approx(292.5, abs=3)
    # Antipodes do not blow up on rounding.
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088, rel=1e-9)


@pytest.mark.django_db
def test_chennai_areas_ship_with_the_migration():
    names = set(service_area_list().values_list("name", flat=True))
    assert {"Ambattur", "Anna Nagar", "T. Nagar", "Adyar", "Velachery", "Tambaram", "Sholinganallur"} <= names
    assert len(names) >= 30
    ambattur = ServiceArea.objects.get(name="Ambattur")
    assert (ambattur.latitude, ambattur.longitude) == (13.1143, 80.1548)


@pytest.mark.django_db
def test_nearest_area_for_anna_nagar_is_anna_nagar_under_half_a_km():
    nearest = service_area_nearest(latitude=13.0891, longitude=80.2107)
    assert nearest.area.name == "Anna Nagar"
    assert nearest.distance_km < 0.5
    assert nearest.inside
    # A point a little off the centre: still Anna Nagar, distance as haversine says.
    nearest = service_area_nearest(latitude=13.0850, longitude=80.2150)
    assert nearest.area.name == "Anna Nagar"
    assert nearest.distance_km == pytest.approx(haversine_km(13.0850, 80.2150, 13.0891, 80.2107), abs=1e-6)


@pytest.mark.django_db
def test_sql_nearest_agrees_with_a_python_scan_everywhere():
    areas = list(service_area_list())
    for lat in (12.90, 12.98, 13.03, 13.07, 13.12, 13.16):
        for lng in (80.10, 80.16, 80.21, 80.25, 80.29):
            expected = min(areas, key=lambda a: (haversine_km(lat, lng, a.latitude, a.longitude), a.pk))
            nearest = service_area_nearest(latitude=lat, longitude=lng)
            assert nearest.area.pk == expected.pk
            assert nearest.distance_km == pytest.approx(haversine_km(lat, lng, expected.latitude, expected.longitude))


@pytest.mark.django_db
def test_far_away_is_outside_and_inactive_areas_are_ignored():
    nearest = service_area_nearest(latitude=28.6139, longitude=77.2090)  # New Delhi
    assert not nearest.inside and nearest.distance_km > 1700
    ServiceArea.objects.filter(name="Anna Nagar").update(is_active=False)
    assert service_area_nearest(latitude=13.0891, longitude=80.2107).area.name != "Anna Nagar"
    ServiceArea.objects.all().delete()
    assert service_area_nearest(latitude=13.0891, longitude=80.2107) is None


@pytest.mark.django_db
def test_area_by_name_ignores_case_and_punctuation():
    assert service_area_by_name(name="t nagar").name == "T. Nagar"
    assert service_area_by_name(name="ANNA NAGAR").name == "Anna Nagar"
    assert service_area_by_name(name="Gotham") is None
    assert service_area_by_name(name="  ") is None


@pytest.mark.django_db
def test_seeding_the_chennai_areas_is_idempotent():
    from geo.services import service_areas_seed_chennai

    assert service_areas_seed_chennai() == 0  # the migration shipped them all
    ServiceArea.objects.filter(name="Adyar").delete()
    assert service_areas_seed_chennai() == 1
    assert ServiceArea.objects.filter(name="Adyar").count() == 1
