from django.urls import path

from crm import apis

urlpatterns = [
    path("webhooks/hubspot/", apis.HubSpotWebhookApi.as_view(), name="webhook-hubspot"),
    path("webhooks/gmail/", apis.GmailWebhookApi.as_view(), name="webhook-gmail"),
    path("webhooks/calendar/", apis.CalendarWebhookApi.as_view(), name="webhook-calendar"),
    path("crm/hubspot/oauth/authorize/", apis.HubSpotOAuthAuthorizeApi.as_view(), name="hubspot-oauth-authorize"),
    path("crm/hubspot/oauth/callback/", apis.HubSpotOAuthCallbackApi.as_view(), name="hubspot-oauth-callback"),
    path("rules/", apis.RuleListCreateApi.as_view(), name="rule-list"),
    path("rules/<int:rule_id>/", apis.RuleDetailApi.as_view(), name="rule-detail"),
]
