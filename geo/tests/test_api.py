import pytest

pytestmark = pytest.mark.django_db


def test_nearest_for_anna_nagar(owner_client):
    response = owner_client.get("/api/v1/geo/nearest/", {"lat": "13.0891", "lng": "80.2107"})
    assert response.status_code == 200
    body = response.json()
    assert body["area"]["name"] == "Anna Nagar" and body["distance_km"] < 0.5 and body["inside"] is True
    assert set(body["area"]) == {"id", "name", "city", "latitude", "longitude", "radius_km"}


@pytest.mark.parametrize(
    "query",
    [{}, {"lat": "13.08"}, {"lat": "abc", "lng": "80.2"}, {"lat": "91", "lng": "80"}, {"lat": "13", "lng": "-181"}],
)
def test_nearest_refuses_bad_coordinates_with_json(owner_client, query):
    response = owner_client.get("/api/v1/geo/nearest/", query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["detail"]


def test_nearest_without_areas(owner_client):
    from geo.models import ServiceArea

    ServiceArea.objects.all().delete()
    response = owner_client.get("/api/v1/geo/nearest/", {"lat": "13", "lng": "80"})
    assert response.json() == {"area": None, "distance_km": None, "inside": False}


def test_areas_list(owner_client):
    response = owner_client.get("/api/v1/geo/areas/", {"page_size": 100})
    assert response.status_code == 200
    names = [row["name"] for row in response.json()["results"]]
    assert "Ambattur" in names and "Anna Nagar" in names and response.json()["count"] == len(names)


def test_geo_needs_authentication(api_client):
    assert api_client.get("/api/v1/geo/areas/").status_code == 401
