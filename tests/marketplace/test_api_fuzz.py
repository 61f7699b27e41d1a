"""Every API operation in /api/schema/, fuzzed by schemathesis: no answer is a 5xx.

The Django app is called in-process through its WSGI handler (schemathesis' WSGI
support), inside the test's database transaction. Bob (a buyer) authenticates with HTTP
Basic, so the operations behind a login are reached too; a generated integer dataset id
is swapped for the published dataset's, so the criteria are parsed, not stopped by a 404.
Bounded and deterministic: derandomized, a fixed number of examples per operation.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

EXAMPLES_PER_OPERATION = 40


# Loaded from the app itself at collection (the schema view needs no database); the
# operations are called on the same WSGI handler. (schemathesis.pytest.from_fixture, the
# lazy loader, does not work with pytest 9.2: it sets Function._nodeid.)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
BASIC = "Basic " + base64.b64encode(b"bob:fuzz-password-123").decode()


@pytest.fixture
def fuzz_world(settings, published_dataset, bob, dua) -> Iterator[int]:  # noqa: ANN001
    """Bob can log in with a password; rate limits are lifted (they answer 429 after a
    while) so every example reaches the parsers. Returns the published dataset's id."""
    settings.QUOTE_RATE = settings.COUNT_QUERY_RATE = "1000000/hour"
    bob.set_password("fuzz-password-123")
    bob.save(update_fields=["password"])
    # As Django's test client does: the handler must not close the test's connection (and
    # with it the transaction the test runs in) at the end of each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield published_dataset.pk
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_api_operation_answers_with_a_server_error(case, fuzz_world) -> None:  # noqa: ANN001
    if isinstance(case.body, dict) and isinstance(case.body.get("dataset_id"), int):
        case.body["dataset_id"] = fuzz_world
    case.call_and_validate(headers={"Authorization": BASIC}, checks=[not_a_server_error])
