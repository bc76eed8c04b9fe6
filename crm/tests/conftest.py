from crm.tests.fake_google import fake_google  # noqa: F401
from crm.tests.fake_hubspot import fake_hubspot  # noqa: F401
