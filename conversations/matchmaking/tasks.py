from celery import shared_task

from conversations.matchmaking import services


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def matchmaking_cleanup_task() -> dict:
    """Remove ghost tickets, end abandoned sessions and rooms (beat, every 30 seconds)."""
    return services.matchmaking_cleanup()
