from django.urls import path

from leads import apis

urlpatterns = [
    path("leads/", apis.LeadListApi.as_view(), name="lead-list"),
    # Before the detail route: "export.csv" is not an id, but keep the order obvious.
    path("leads/export.csv", apis.LeadExportApi.as_view(), name="lead-export"),
    path("leads/<int:lead_id>/", apis.LeadDetailApi.as_view(), name="lead-detail"),
]
