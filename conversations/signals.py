"""Conversation events other apps react to (leads, CRM rules). Sent after commit.

user_message_stored(sender=Conversation, conversation=..., message=...)
conversation_ended(sender=Conversation, conversation=..., reason=...)
"""

from django.dispatch import Signal

user_message_stored = Signal()
conversation_ended = Signal()
