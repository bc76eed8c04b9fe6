import factory

from bots.models import Bot, Document, PromptTemplate
from chatbase.core.tests.factories import UserFactory


class PromptTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptTemplate

    name = factory.Sequence(lambda n: f"Template {n}")
    slug = factory.Sequence(lambda n: f"template-{n}")
    system_prompt = "You are {bot_name}, a helpful assistant."


class BotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Bot

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Bot {n}")
    allowed_origins = factory.LazyFunction(lambda: ["http://testserver"])


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    bot = factory.SubFactory(BotFactory)
    title = factory.Sequence(lambda n: f"Document {n}")
    source_type = Document.SourceType.TEXT
