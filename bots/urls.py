from django.urls import path

from bots import apis

urlpatterns = [
    path("bots/", apis.BotListCreateApi.as_view(), name="bot-list"),
    path("bots/<int:bot_id>/", apis.BotDetailApi.as_view(), name="bot-detail"),
    path("bots/<int:bot_id>/rotate-keys/", apis.BotRotateKeysApi.as_view(), name="bot-rotate-keys"),
    path("bots/<int:bot_id>/documents/", apis.DocumentListCreateApi.as_view(), name="bot-documents"),
    path("bots/<int:bot_id>/search/", apis.BotSearchApi.as_view(), name="bot-search"),
    path("documents/<int:document_id>/", apis.DocumentDetailApi.as_view(), name="document-detail"),
    path("tools/", apis.ToolListApi.as_view(), name="tool-list"),
    path("templates/", apis.TemplateListCreateApi.as_view(), name="template-list"),
    path("templates/<slug:slug>/", apis.TemplateDetailApi.as_view(), name="template-detail"),
    path("documents/<int:document_id>/resync/", apis.DocumentResyncApi.as_view(), name="document-resync"),
    path("widget/<str:public_key>/config/", apis.WidgetConfigApi.as_view(), name="widget-config"),
]
