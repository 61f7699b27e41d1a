"""Every API operation in /api/schema/, fuzzed by schemathesis: no answer is a 5xx.

The Django app is called in-process through its WSGI handler (schemathesis' WSGI
support), inside the test's database transaction. Bob (a buyer) authenticates with a
personal access token (read and download), so the operations behind a login are reached too
(those closed to tokens answer 403); a generated integer dataset id is swapped for the
published dataset's, so the criteria are parsed, not stopped by a 404.
Bounded and deterministic: derandomized, a fixed number of examples per operation.
"""
from __future__ import annotations

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


@pytest.fixture
def fuzz_world(settings, published_dataset, bob, dua) -> Iterator[tuple[int, str]]:  # noqa: ANN001
    """Bob has a token; rate limits are lifted (they answer 429 after a while) so every
    example reaches the parsers. Returns the published dataset's id and the token."""
    from marketplace.tokens import api_token_create

    settings.QUOTE_RATE = settings.COUNT_QUERY_RATE = "1000000/hour"
    _, secret = api_token_create(user=bob, name="fuzz", scopes=["read", "download"], expires=None)
    # As Django's test client does: the handler must not close the test's connection (and
    # with it the transaction the test runs in) at the end of each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield published_dataset.pk, secret
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_api_operation_answers_with_a_server_error(case, fuzz_world) -> None:  # noqa: ANN001
    dataset_id, secret = fuzz_world
    if isinstance(case.body, dict) and isinstance(case.body.get("dataset_id"), int):
        case.body["dataset_id"] = dataset_id
    case.call_and_validate(headers={"Authorization": f"Bearer {secret}"}, checks=[not_a_server_error])
