"""Reactions to conversation events (connected in LeadsConfig.ready)."""

from __future__ import annotations

import functools
import logging

from django.dispatch import receiver

from chatbase.core import deferred
from conversations.signals import user_message_stored

logger = logging.getLogger(__name__)


@receiver(user_message_stored, dispatch_uid="leads.user_message_stored")
def on_user_message_stored(sender, conversation, message, **kwargs):
    # Sent after commit already; the work (detection, scoring) goes to a worker.
    from leads.services import lead_message_process
    from leads.tasks import lead_message_process_task

    try:
        if lead_message_process_task.app.conf.task_always_eager:
            # No broker: the task would run right here. Its service runs on the objects
            # the sender already holds, without Celery's eager machinery and the task's
            # re-fetch of the message (~1.5 ms of CPU); the chat socket holds it until
            # the answer's first token is out (chatbase.core.deferred), whose run()
            # logs a failure as the except below does.
            detect = functools.partial(lead_message_process, message=message)
            if not deferred.hold(detect):
                detect()
        else:
            lead_message_process_task.delay(message.pk)
    except Exception:
        # Lead detection must never break the chat: the visitor's message is stored
        # and will be answered whatever happens here.
        logger.exception("Lead detection of message %s failed", message.pk)
