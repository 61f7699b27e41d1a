"""Catalog API: search with facets, dataset detail visibility, OpenAPI schema and docs."""
from __future__ import annotations

import json

import pytest
import yaml
from rest_framework.test import APIClient

from catalog.models import Dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def as_user(user) -> APIClient:  # noqa: ANN001
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_error_shape(body: dict, code: str) -> None:
    assert set(body) == {"message", "code", "extra"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["extra"], dict)


# ---- search ----------------------------------------------------------------------------
def test_it_lists_published_datasets_with_results_and_facets(api, published_dataset, dataset, alice):
    response = api.get("/api/datasets/", {"modality": "CT", "body_part": "CHEST"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results", "facets"}
    assert body["count"] == 1
    (row,) = body["results"]
    assert row["id"] == published_dataset.pk
    assert row["title"] == "Chest CT screening"
    assert row["provider"] == "Alpha Imaging"
    assert row["modalities"] == ["CT"]
    assert row["body_parts"] == ["CHEST"]
    # Two patients are fewer than the disclosure threshold: hidden from anonymous callers,
    # exact for the provider's own members.
    assert (row["patient_count"], row["study_count"], row["instance_count"]) == ("suppressed",) * 3
    (own,) = as_user(alice).get("/api/datasets/", {"modality": "CT"}).json()["results"]
    assert (own["patient_count"], own["study_count"], own["instance_count"]) == (2, 2, 6)
    assert row["price_per_study"] == "10.00"
    assert row["currency"] == "USD"
    assert row["status"] == "published"
    assert set(body["facets"]) == {"modality", "body_part", "sex", "age_band", "manufacturer", "provider"}
    assert body["facets"]["modality"] == [{"value": "CT", "label": "CT (computed tomography)", "count": 1, "selected": True}]
    assert body["facets"]["provider"] == [
        {"value": "Alpha Imaging", "label": "Alpha Imaging", "count": 1, "selected": False}]


def test_it_returns_no_results_but_a_valid_shape_when_nothing_matches(api, published_dataset):
    body = api.get("/api/datasets/", {"modality": "MR"}).json()
    assert body["count"] == 0
    assert body["results"] == []
    # the modality facet ignores its own filter, so the buyer sees the CT alternative; the
    # value filtered by stays listed (count 0) so a page can offer to untick it
    assert body["facets"]["modality"] == [{"value": "CT", "label": "CT (computed tomography)", "count": 1, "selected": False},
                                          {"value": "MR", "label": "MR (magnetic resonance)", "count": 0, "selected": True}]


def test_it_hides_draft_datasets_from_the_search_api(api, provider, alice):
    from catalog.datasets.services import dataset_create

    dataset_create(provider=provider, acting_user=alice, title="Secret draft")
    for client in (api, as_user(alice)):
        body = client.get("/api/datasets/", {"q": "secret"}).json()
        assert body["count"] == 0


def test_it_answers_an_unknown_facet_with_400_and_the_error_envelope(api, published_dataset):
    response = api.get("/api/datasets/", {"colour": "blue"})
    assert response.status_code == 400
    body = response.json()
    assert_error_shape(body, "invalid_search")
    assert "colour" in body["message"]


@pytest.mark.parametrize("q", ["'; DROP TABLE catalog_dataset--", "a & | ! (", "x" * 10_000])
def test_it_survives_hostile_keyword_queries(api, published_dataset, q):
    response = api.get("/api/datasets/", {"q": q})
    assert response.status_code == 200
    assert response.json()["count"] == 0
    assert Dataset.objects.filter(pk=published_dataset.pk).exists()


# ---- detail ----------------------------------------------------------------------------
def test_it_shows_a_published_dataset_with_its_study_breakdown(api, published_dataset, alice):
    hidden = api.get(f"/api/datasets/{published_dataset.pk}/").json()
    assert {row["count"] for group in hidden["breakdown"] for row in group["rows"]} == {"suppressed"}
    response = as_user(alice).get(f"/api/datasets/{published_dataset.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == published_dataset.pk
    breakdown = {group["key"]: group["rows"] for group in body["breakdown"]}
    assert set(breakdown) == {"sex", "age_band", "body_part", "manufacturer"}
    assert breakdown["body_part"] == [{"value": "CHEST", "label": "Chest", "count": 2, "orderable": True}]
    assert breakdown["manufacturer"] == [{"value": "SIEMENS", "label": "SIEMENS", "count": 2, "orderable": True}]
    assert sum(row["count"] for row in breakdown["sex"]) == 2
    assert {row["label"] for row in breakdown["sex"]} <= {"Female", "Male"}


def test_it_hides_a_draft_dataset_from_bob_charlie_and_anonymous_with_the_same_404(api, dataset, bob, charlie):
    url = f"/api/datasets/{dataset.pk}/"
    missing = f"/api/datasets/{dataset.pk + 10_000}/"
    for client in (api, as_user(bob), as_user(charlie)):
        response = client.get(url)
        assert response.status_code == 404
        assert_error_shape(response.json(), "not_found")
        # "not yours" and "does not exist" look exactly alike
        assert client.get(missing).json() == response.json()


def test_it_shows_a_draft_dataset_to_its_provider_and_to_staff(dataset, alice, admin_user):
    for user in (alice, admin_user):
        response = as_user(user).get(f"/api/datasets/{dataset.pk}/")
        assert response.status_code == 200
        assert response.json()["status"] == "draft"


# ---- schema and docs -------------------------------------------------------------------
def test_it_serves_an_openapi_document(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert "/api/datasets/" in paths
    assert "/api/datasets/{dataset_id}/" in paths
    assert "/api/orders/" in paths and "/api/quotes/" in paths
    parameters = {p["name"] for p in paths["/api/datasets/"]["get"]["parameters"]}
    assert {"q", "modality", "body_part", "sex", "age_band", "manufacturer", "provider", "sort"} <= parameters


def test_it_serves_the_openapi_document_as_json(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert json.loads(response.content)["info"]["title"]


def test_it_serves_the_api_docs_page(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    script = client.get("/api/docs/", {"script": ""})  # the start-up script, a file for the CSP
    assert script.status_code == 200 and b"/api/schema/" in script.content
