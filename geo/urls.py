from django.urls import path

from geo import apis

urlpatterns = [
    path("geo/areas/", apis.ServiceAreaListApi.as_view(), name="geo-areas"),
    path("geo/nearest/", apis.NearestAreaApi.as_view(), name="geo-nearest"),
]
