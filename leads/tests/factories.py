import factory

from bots.tests.factories import BotFactory
from conversations.models import Conversation
from leads.models import Lead


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    bot = factory.SubFactory(BotFactory)
    visitor_id = factory.Sequence(lambda n: f"visitor-{n}")


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    bot = factory.SubFactory(BotFactory)
    email = factory.Sequence(lambda n: f"lead{n}@example.com")
    source = Lead.Source.WIDGET
