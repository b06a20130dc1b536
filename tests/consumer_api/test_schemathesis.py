"""Property tests of the consumer API against its served OpenAPI schema (schemathesis).

Every /api/v1/ operation (the worker API has its own tests) gets generated requests with a
valid read-write key: no answer is a 5xx, and every answer's status, content type and body
match the schema. Marked ``postgres``: it runs in the PostgreSQL pass. 200 examples per
operation took 6 min 37 s and 2 min 21 s (two runs) on PostgreSQL on a loaded 2-CPU machine
(load average 14-25); the budget is 10 minutes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (  # noqa: I001
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from telegram.pairing import bind_identity

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

import os  # noqa: E402

# SCHEMATHESIS_EXAMPLES overrides it (e.g. to measure the time of a larger run).
EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "200"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_consumer_api_matches_its_schema(world, make_key, settings_override):
    from config.wsgi import application

    key = make_key().key
    auth = {"Authorization": f"Api-Key {key}"}
    # A real row, so generated requests sometimes meet data and not only 404s. (Not through
    # Django's test client: it would reconnect the signals the fixture disconnected.)
    bind_identity("u1", world["alpha"], bot_identity="1000", telegram_user_id="55", actor="test")
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, headers=auth)
    schema = schema.include(path_regex=r"^/api/v1/(?!worker/)")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            case.call_and_validate(headers=auth, checks=CHECKS)

        run()


@pytest.fixture
def settings_override(settings):
    """No throttling for generated traffic; and, as Django's test client does, requests do
    not close the test's connection (its transaction holds the fixtures)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    settings.CONSUMER_API_THROTTLE_RATE = "1000000/min"
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield settings
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
