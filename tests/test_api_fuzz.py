"""Schemathesis against our own OpenAPI document: no input makes the API answer 5xx.

Every operation in /api/schema/ is called with generated valid and invalid inputs,
as an authenticated owner (whose bot exists, so ids are sometimes real).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from bots.tests.factories import BotFactory
from chatbase.core.services import api_token_create
from chatbase.core.tests.factories import UserFactory

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


# Transactional: the WSGI handler closes the connection after each request (the test
# client would not), which an enclosing test transaction cannot survive.
@pytest.fixture
def owner_token(transactional_db):
    owner = UserFactory()
    BotFactory(owner=owner)
    return api_token_create(user=owner, name="fuzz")[1]


# Minutes of requests, so it runs once per CI run (the first pass), not in both.
@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_input_makes_the_api_fail_with_a_server_error(case, owner_token, media_root):
    case.call_and_validate(headers={"Authorization": f"Bearer {owner_token}"}, checks=[not_a_server_error])
