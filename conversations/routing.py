from django.urls import path

from conversations.consumers import ChatConsumer
from conversations.matchmaking.consumers import MatchConsumer

websocket_urlpatterns = [
    path("ws/chat/<str:public_key>/", ChatConsumer.as_asgi()),
    path("ws/match/", MatchConsumer.as_asgi()),
]
