import factory

from chatbase.core.models import User

TEST_PASSWORD = "pw-for-tests-1"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"owner{n}@example.com")
    password = factory.django.Password(TEST_PASSWORD)
