from crm.tests.fake_hubspot import fake_hubspot  # noqa: F401
