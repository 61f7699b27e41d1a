"""Bad input never gives a 500: each finding of the "Hardening" issue, as it was reported.

Every case here gave HTTP 500 (or silently did the wrong thing) before the input layer
(marketplace/input_guard.py, marketplace/parsers.py) and the field checks were added.
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import DataRequest, DataRequestResponse, Dataset, SavedSearch, UploadFile
from factories.dicom import ct_files
from factories.orders import USE
from orders.models import Order

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

PUBLIC_SEARCHES = ["/datasets/", "/cohorts/", "/api/datasets/", "/api/studies/", "/api/cohorts/"]


def api(user=None) -> APIClient:  # noqa: ANN001
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def assert_refused(response, name: str) -> str:  # noqa: ANN001
    """A 400 whose message names the field or parameter."""
    assert response.status_code == 400, (response.status_code, response.content[:500])
    text = response.content.decode()
    assert name in text, text[:500]
    return text


# ---- NUL bytes in query parameters of the public search pages and APIs -------------------
@pytest.mark.parametrize("path", [*PUBLIC_SEARCHES, "/"])
@pytest.mark.parametrize("name", ["q", "modality", "provider"])
def test_a_nul_byte_in_a_search_parameter_is_a_400_naming_it(client, path, name) -> None:
    response = client.get(path, {name: "CT\x00x"})
    assert_refused(response, name)


def test_a_nul_byte_in_an_api_error_keeps_the_error_envelope(client) -> None:
    body = client.get("/api/studies/", {"q": "a\x00"}).json()
    assert set(body) == {"message", "code", "extra"}
    assert body["code"] == "invalid_input" and "q" in body["extra"]["fields"]


def test_a_nul_byte_in_a_parameter_name_is_refused(client) -> None:
    assert client.get("/datasets/", {"q\x00": "x"}).status_code == 400


# ---- NUL bytes in form fields ------------------------------------------------------------
def test_a_nul_byte_in_a_data_request_title_is_a_400_naming_the_field(client, bob) -> None:
    client.force_login(bob)
    response = client.post("/requests/", {"title": "Knee\x00MRI", "description": "Any knee MRI"})
    assert_refused(response, "title")
    assert not DataRequest.objects.exists()


def test_a_nul_byte_in_a_saved_search_name_is_a_400_naming_the_field(client, bob) -> None:
    client.force_login(bob)
    response = client.post("/saved/new/", {"name": "Female\x00CT", "sex": "F"})
    assert_refused(response, "name")
    assert not SavedSearch.objects.exists()


# ---- the checkout's expected total -------------------------------------------------------
def checkout_form(expected) -> dict:  # noqa: ANN001
    return {"accept": "on", "expected_total_minor": expected, "expected_currency": "USD", "payment_method": "invoice",
            "password": "pass-1234567", **USE}


@pytest.mark.parametrize("expected", ["sNaN", "NaN", "abc", "Infinity", "1e400", "20.00", "-1", "",
                                      "２０００", "9" * 40])
def test_an_unparsable_expected_total_is_refused_not_skipped(client, bob, published_dataset, dua,
                                                             expected) -> None:
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})  # into the cart
    response = client.post(reverse("cart_checkout"), checkout_form(expected))
    assert_refused(response, "expected_total_minor")
    assert not Order.objects.exists()


def test_the_checkout_still_places_an_order_at_the_expected_total(client, bob, published_dataset, dua) -> None:
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    response = client.post(reverse("cart_checkout"), checkout_form("2000"))
    assert response.status_code == 302
    assert Order.objects.get().total_minor == 2000


@pytest.mark.parametrize("expected", ["sNaN", "NaN", "abc", "Infinity", "1e400", 1e300, -5, "20.5"])
def test_the_order_api_refuses_a_bad_expected_total_naming_it(bob, published_dataset, dua, expected) -> None:
    api(bob).post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json")
    response = api(bob).post("/api/orders/", {"accept_agreement": True, "payment_method": "invoice",
                                              "expected_currency": "USD", "expected_total_minor": expected,
                                              "password": "pass-1234567"}, format="json")
    assert_refused(response, "expected_total_minor")
    assert not Order.objects.exists()


# ---- deeply nested and oversized JSON ----------------------------------------------------
@pytest.mark.parametrize("depth", [33, 2_000, 100_000])
def test_deeply_nested_json_is_a_400(bob, published_dataset, depth) -> None:
    nested = "[" * depth + "]" * depth
    body = f'{{"dataset_id": {published_dataset.pk}, "criteria": {{"q": {nested}}}}}'
    response = api(bob).post("/api/quotes/", body, content_type="application/json")
    text = assert_refused(response, "deep")
    assert "Traceback" not in text


def test_json_of_ordinary_depth_is_still_parsed(bob, published_dataset) -> None:
    body = json.dumps({"dataset_id": published_dataset.pk, "criteria": {"q": ["chest"]}})
    assert api(bob).post("/api/quotes/", body, content_type="application/json").status_code == 200


def test_an_oversized_json_body_is_a_400(bob, published_dataset) -> None:
    body = json.dumps({"dataset_id": published_dataset.pk, "criteria": {"q": ["x" * 2_000_000]}})
    response = api(bob).post("/api/quotes/", body, content_type="application/json")
    assert response.status_code in (400, 413)
    assert "too large" in response.json()["message"]


@pytest.mark.parametrize("value, what", [("a\x00b", "NUL"), ("\ud800", "surrogate")])
def test_a_json_string_with_a_nul_or_lone_surrogate_is_a_400_naming_the_field(bob, published_dataset,
                                                                              value, what) -> None:
    body = json.dumps({"dataset_id": published_dataset.pk, "criteria": {"q": [value]}})
    response = api(bob).post("/api/quotes/", body, content_type="application/json")
    text = assert_refused(response, "criteria.q")
    assert what in text


def test_nan_in_json_is_refused(bob, published_dataset) -> None:
    body = '{"accept_agreement": true, "payment_method": "invoice", "expected_total_minor": NaN}'
    assert_refused(api(bob).post("/api/orders/", body, content_type="application/json"), "NaN")


# ---- prices: overflow and silent rounding ------------------------------------------------
@pytest.fixture
def open_request(bob) -> DataRequest:
    return DataRequest.objects.create(requester=bob, title="Knee MRI", description="Any knee MRI")


@pytest.mark.parametrize("price, message", [
    ("1e10", "price_per_study"), ("10000000000", "price_per_study"), ("1e400", "price_per_study"),
    ("10.1234567891", "decimal places"), ("sNaN", "price_per_study"), ("-1", "price_per_study"),
])
def test_a_data_request_answer_with_a_bad_price_is_refused(client, alice, open_request, price, message) -> None:
    client.force_login(alice)
    response = client.post(reverse("data_request_detail", args=[open_request.pk]),
                           {"offer": "We have 300 knees", "price_per_study": price})
    assert_refused(response, message)
    assert not DataRequestResponse.objects.exists()


def test_a_data_request_answer_with_a_price_in_cents_is_stored(client, alice, open_request) -> None:
    client.force_login(alice)
    client.post(reverse("data_request_detail", args=[open_request.pk]),
                {"offer": "We have 300 knees", "price_per_study": "10.25"})
    assert DataRequestResponse.objects.get().price_per_study == Decimal("10.25")


@pytest.mark.parametrize("price", ["1e10", "10.1234567891", "sNaN", "1e400", "-0.001"])
def test_the_dataset_form_refuses_a_bad_price_naming_the_field(client, alice, provider, price) -> None:
    client.force_login(alice)
    response = client.post(reverse("dataset_new"), {"title": "Knee MRI", "price": price,
                                                    "currency": "EUR"})
    assert response.status_code == 400
    assert "price" in response.context["form"].errors
    assert not Dataset.objects.filter(title="Knee MRI").exists()


# ---- uploads: an empty file is named, the others upload ----------------------------------
def test_an_empty_file_is_refused_by_name_while_the_others_upload(client, alice, dataset) -> None:
    client.force_login(alice)
    name, data = ct_files(n_patients=1, n_instances=1, seed=3)[0]
    files = [SimpleUploadedFile("good.dcm", data), SimpleUploadedFile("empty.dcm", b"")]
    response = client.post(reverse("dataset_upload", args=[dataset.pk]), {"files": files}, follow=True)
    messages = " ".join(str(m) for m in response.context["messages"])
    assert "empty.dcm" in messages and "empty" in messages
    assert "Choose at least one file" not in messages
    assert list(UploadFile.objects.values_list("name", flat=True)) == ["good.dcm"]


def test_only_empty_files_are_refused_by_name(client, alice, dataset) -> None:
    client.force_login(alice)
    response = client.post(reverse("dataset_upload", args=[dataset.pk]),
                           {"files": [SimpleUploadedFile("nothing.dcm", b"")]}, follow=True)
    messages = " ".join(str(m) for m in response.context["messages"])
    assert "nothing.dcm" in messages and "empty" in messages
    assert not UploadFile.objects.exists()


def test_an_api_validation_error_names_the_field_in_its_message(bob, published_dataset) -> None:
    response = api(bob).post("/api/orders/", {"accept_agreement": True, "payment_method": "invoice",
                                              "expected_currency": "USD", "expected_total_minor": "abc",
                                              "password": "pass-1234567"}, format="json")
    body = response.json()
    assert body["message"].startswith("Invalid input: expected_total_minor: ")
    assert body["extra"]["fields"]["expected_total_minor"]


def test_a_nul_byte_in_the_session_cookie_is_a_400_not_a_database_error(client) -> None:
    client.cookies["sessionid"] = "abcdefgh\x00ij"
    assert_refused(client.get("/orders/"), "sessionid")
