from django.urls import path

from chatbase.core import apis

urlpatterns = [
    path("me/", apis.MeApi.as_view(), name="me"),
    path("tokens/", apis.ApiTokenListCreateApi.as_view(), name="token-list"),
    path("tokens/<int:token_id>/", apis.ApiTokenDetailApi.as_view(), name="token-detail"),
]
