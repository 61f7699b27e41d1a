"""Quotes and count queries are rate-limited per account (per address when anonymous) and
audited: each answers one question about the data, and differencing many of them is the
residual risk the disclosure rule cannot remove (catalog/disclosure.py)."""
from __future__ import annotations

import types

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from catalog.models import Study
from marketplace.models import AuditEvent

pytestmark = pytest.mark.django_db

# A fixed clock inside a window (100 s into an hour, 40 s into a minute): no test meets a
# window's edge by chance, and the wait a refusal names is known.
T0 = 1_800_000_100.0
assert T0 % 3600 == 100 and T0 % 60 == 40


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    cache.clear()  # the cache is a real Redis shared by every test: no budget carried over


@pytest.fixture
def clock(monkeypatch):
    now = [T0]
    import marketplace.ratelimit

    monkeypatch.setattr(marketplace.ratelimit, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def api(user=None, ip: str = "127.0.0.1") -> APIClient:  # noqa: ANN001
    client = APIClient(REMOTE_ADDR=ip)
    if user is not None:
        client.force_login(user)  # a session: the same account for the API and the pages
    return client


def quote(client: APIClient, dataset, criteria=None):  # noqa: ANN001
    return client.post("/api/quotes/", {"dataset_id": dataset.pk, "criteria": criteria or {}}, format="json")


def assert_limited(response, *, limit: str, wait: int) -> None:  # noqa: ANN001
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "rate_limited"
    assert limit in body["message"], body["message"]
    assert response["Retry-After"] == str(wait) and body["extra"]["retry_after"] == wait


# --- quotes -----------------------------------------------------------------------------------

def test_quotes_are_limited_per_account_and_each_one_is_audited(
        client, published_dataset, bob, charlie, tiny_threshold, settings, clock):
    settings.QUOTE_RATE = "3/hour"
    studies = Study.objects.filter(dataset=published_dataset).count()
    asked = [{}, {"modality": ["CT"]}, {"q": "", "body_part": "CHEST", "price_max": "100"}]
    for criteria in asked:
        response = quote(api(bob), published_dataset, criteria)
        assert response.status_code == 200, response.content
        assert response.json()["study_count"] == studies == 2
    assert_limited(quote(api(bob), published_dataset), limit="at most 3 per hour", wait=3501)
    # The order page asks for a quote too: the same budget, refused with the same words.
    client.force_login(bob)
    page = client.get(f"/datasets/{published_dataset.pk}/order/")
    assert page.status_code == 429 and "at most 3 per hour" in page.content.decode()
    # Another account has its own budget.
    assert quote(api(charlie), published_dataset).status_code == 200

    events = AuditEvent.objects.filter(action="quote.request", actor=bob).order_by("id")
    assert [e.detail for e in events] == [
        {"criteria": {}, "studies": 2, "total_minor": 2000, "currency": "USD"},
        {"criteria": {"modality": ["CT"]}, "studies": 2, "total_minor": 2000, "currency": "USD"},
        {"criteria": {"body_part": ["CHEST"], "price_max": ["100"]}, "studies": 2, "total_minor": 2000,
         "currency": "USD"},
    ]
    assert {(e.object_type, e.object_id, e.ip_address) for e in events} == {
        ("catalog.dataset", str(published_dataset.pk), "127.0.0.1")}
    assert AuditEvent.objects.filter(action="quote.request", actor=charlie).count() == 1
    assert not AuditEvent.objects.filter(action="quote.refused").exists()

    clock[0] += 3600  # the next window: a fresh budget
    assert quote(api(bob), published_dataset).status_code == 200


def test_a_quote_below_the_threshold_is_refused_and_audited(published_dataset, bob, settings):
    assert settings.DISCLOSURE_THRESHOLD == 11
    criteria = {"modality": ["CT"], "q": "chest"}
    response = quote(api(bob), published_dataset, criteria)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "below_disclosure_threshold"
    assert "fewer than 11" in body["message"]
    assert "2" not in body["message"]  # the refusal does not tell the count either
    refused = AuditEvent.objects.get(action="quote.refused")
    assert refused.actor == bob and refused.object_id == str(published_dataset.pk)
    assert refused.detail == {"criteria": {"modality": ["CT"], "q": ["chest"]}, "reason": "below_threshold"}
    assert not AuditEvent.objects.filter(action="quote.request").exists()


# --- count queries ----------------------------------------------------------------------------

COUNT_QUERIES = {
    "api.cohorts": ("/api/cohorts/", {"sex": ["F"]}),
    "api.studies": ("/api/studies/", {"modality": ["CT"], "q": "chest"}),
    "cohort_builder": ("/cohorts/", {"body_part": ["HEAD"]}),
}


@pytest.mark.parametrize("last", list(COUNT_QUERIES))
def test_count_queries_share_one_budget_per_account_and_are_audited(
        published_dataset, bob, charlie, settings, clock, last):
    settings.COUNT_QUERY_RATE = "2/minute"
    first, second = [where for where in COUNT_QUERIES if where != last]
    client = api(bob)
    for where in (first, second):
        url, params = COUNT_QUERIES[where]
        assert client.get(url, params).status_code == 200, where
    url, params = COUNT_QUERIES[last]
    refused = client.get(url, params)
    if last == "cohort_builder":  # the page says why
        assert refused.status_code == 429
        assert "Too many count queries: at most 2 per minute" in refused.content.decode()
        assert_limited(client.get("/api/cohorts/"), limit="at most 2 per minute", wait=21)
    else:
        assert_limited(refused, limit="at most 2 per minute", wait=21)
        page = client.get("/cohorts/")
        assert page.status_code == 429 and "at most 2 per minute" in page.content.decode()
    # Only the admitted queries were answered and recorded, with what they asked.
    events = AuditEvent.objects.filter(action="count.query").order_by("id")
    assert [(e.actor, e.detail) for e in events] == [
        (bob, {"where": where, "criteria": COUNT_QUERIES[where][1]}) for where in (first, second)]
    # Another account still has its budget; the next window gives bob his back.
    assert api(charlie).get("/api/cohorts/").status_code == 200
    clock[0] += 60
    assert client.get(url, params).status_code == 200


def test_anonymous_count_queries_are_limited_per_address(bob, settings, clock):
    settings.COUNT_QUERY_RATE = "2/minute"
    here, there = api(ip="10.0.0.1"), api(ip="10.0.0.2")
    assert here.get("/api/cohorts/", {"sex": "F"}).status_code == 200
    assert here.get("/cohorts/").status_code == 200
    assert_limited(here.get("/api/studies/"), limit="at most 2 per minute", wait=21)
    assert there.get("/api/studies/").status_code == 200  # another address
    assert api(bob, ip="10.0.0.1").get("/api/studies/").status_code == 200  # an account: its own budget
    anonymous = AuditEvent.objects.filter(action="count.query", actor__isnull=True).order_by("id")
    assert [(e.ip_address, e.detail) for e in anonymous] == [
        ("10.0.0.1", {"where": "api.cohorts", "criteria": {"sex": ["F"]}}),
        ("10.0.0.1", {"where": "cohort_builder", "criteria": {}}),
        ("10.0.0.2", {"where": "api.studies", "criteria": {}}),
    ]
