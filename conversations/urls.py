from django.urls import path

from conversations import apis
from conversations.matchmaking import apis as match_apis
from conversations.matchmaking.webhooks import MatchmakingWebhookApi

urlpatterns = [
    path("bots/<int:bot_id>/chat/", apis.BotChatApi.as_view(), name="bot-chat"),
    path("bots/<int:bot_id>/conversations/", apis.BotConversationListApi.as_view(), name="bot-conversations"),
    path("conversations/<int:conversation_id>/", apis.ConversationDetailApi.as_view(), name="conversation-detail"),
    # Matchmaking (conversations/matchmaking): external apps' chatbot sessions and the signed webhook.
    path("sessions/", match_apis.SessionListCreateApi.as_view(), name="session-list"),
    path("sessions/<int:session_id>/", match_apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions/<int:session_id>/messages/", match_apis.SessionMessageApi.as_view(), name="session-messages"),
    path("sessions/<int:session_id>/end/", match_apis.SessionEndApi.as_view(), name="session-end"),
    path("webhooks/matchmaking/", MatchmakingWebhookApi.as_view(), name="webhook-matchmaking"),
]
