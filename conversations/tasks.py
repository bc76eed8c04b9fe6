from celery import shared_task

from conversations import chat, services
from conversations.models import Conversation


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def conversations_lifecycle_task() -> dict:
    """Pause idle conversations and end abandoned ones (beat, every minute)."""
    return services.conversations_lifecycle()


@shared_task(
    acks_late=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=110,
    time_limit=120,
)
def conversation_summarize_task(conversation_id: int) -> bool:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return False
    return chat.conversation_summarize(conversation=conversation)


# Celery discovers `conversations.tasks`; the matchmaking task is registered through it.
from conversations.matchmaking.tasks import matchmaking_cleanup_task  # noqa: E402, F401
