from django.urls import path

from conversations import apis

urlpatterns = [
    path("bots/<int:bot_id>/chat/", apis.BotChatApi.as_view(), name="bot-chat"),
    path("bots/<int:bot_id>/conversations/", apis.BotConversationListApi.as_view(), name="bot-conversations"),
    path("conversations/<int:conversation_id>/", apis.ConversationDetailApi.as_view(), name="conversation-detail"),
]
