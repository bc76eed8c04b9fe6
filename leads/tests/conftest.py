import pytest

from bots.tests.factories import BotFactory
from leads.tests.factories import ConversationFactory


@pytest.fixture
def bot(owner):
    return BotFactory(owner=owner)


@pytest.fixture
def conversation(bot):
    return ConversationFactory(bot=bot)


@pytest.fixture
def say(conversation):
    """Store a user message the way the chat does (signals and all)."""
    from conversations.services import message_user_add

    def _say(text, conv=None):
        return message_user_add(conversation=conv or conversation, text=text).message

    return _say


@pytest.fixture
def signals_log():
    """Every lead signal as (name, lead id, created, changed_fields, in_atomic_block)."""
    from django.db import connection

    from leads.signals import lead_changed, lead_created, lead_qualified

    log = []

    def changed(sender, lead, created, changed_fields, **kwargs):
        log.append(("changed", lead.pk, created, frozenset(changed_fields), connection.in_atomic_block))

    def created(sender, lead, **kwargs):
        log.append(("created", lead.pk, None, None, connection.in_atomic_block))

    def qualified(sender, lead, **kwargs):
        log.append(("qualified", lead.pk, None, None, connection.in_atomic_block))

    lead_changed.connect(changed, dispatch_uid="test-changed")
    lead_created.connect(created, dispatch_uid="test-created")
    lead_qualified.connect(qualified, dispatch_uid="test-qualified")
    yield log
    lead_changed.disconnect(dispatch_uid="test-changed")
    lead_created.disconnect(dispatch_uid="test-created")
    lead_qualified.disconnect(dispatch_uid="test-qualified")
