from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from bots import views as widget_views
from chatbase.core import apis as core_apis

api_v1 = [
    path("", include("chatbase.core.urls")),
    path("", include("bots.urls")),
    path("", include("conversations.urls")),
    path("", include("leads.urls")),
    path("", include("geo.urls")),
    path("", include("crm.urls")),
]

admin.site.site_header = "ChatBase administration"
admin.site.site_title = "ChatBase admin"

urlpatterns = [
    path("health", core_apis.health_view, name="health"),
    path("ready", core_apis.ready_view, name="ready"),
    path("metrics", core_apis.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: no inline script, so the
    # docs work under our Content-Security-Policy.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include(api_v1)),
    path("demo/", widget_views.demo_view, name="demo"),
    path("widget/preview/<int:bot_id>/", widget_views.preview_view, name="widget-preview"),
]

# Every error outside DRF answers JSON {"detail","code"}, unknown URLs included.
handler400 = "chatbase.core.errors.handler400"
handler403 = "chatbase.core.errors.handler403"
handler404 = "chatbase.core.errors.handler404"
handler500 = "chatbase.core.errors.handler500"
