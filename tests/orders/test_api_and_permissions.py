"""Orders: the API, the HTML ordering pages, who sees which order, and the transition table."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from marketplace.exceptions import InvalidTransitionError
from marketplace.models import AuditEvent
from orders.models import Contract, Order, OrderStatusChange
from orders.services import order_place, order_transition

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def as_user(user) -> APIClient:  # noqa: ANN001
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def assert_error(response, status: int, code: str) -> dict:  # noqa: ANN001
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"message", "code", "extra"}
    assert body["code"] == code
    return body


@pytest.fixture
def bobs_order(published_dataset, bob, dua):
    return order_place(buyer=bob, dataset=published_dataset, criteria={}, accept_agreement=True, dua_template=dua)


# ---- quote -----------------------------------------------------------------------------
def test_it_quotes_the_whole_dataset_and_a_filtered_subset(published_dataset, bob):
    api = as_user(bob)
    whole = api.post("/api/quotes/", {"dataset_id": published_dataset.pk}, format="json")
    assert whole.status_code == 200
    assert whole.json() == {"dataset_id": published_dataset.pk, "criteria": {}, "criteria_words": [], "study_count": 2,
                            "unit_price": "10.00", "total": "20.00", "currency": "USD"}

    sexes = published_dataset.sexes
    subset = api.post("/api/quotes/", {"dataset_id": published_dataset.pk, "criteria": {"sex": [sexes[0]]}},
                      format="json").json()
    expected = published_dataset.studies.filter(patient_sex=sexes[0]).count()
    assert subset["study_count"] == expected
    assert Decimal(subset["total"]) == Decimal("10.00") * expected


def test_it_refuses_a_quote_with_an_unknown_study_filter(published_dataset, bob):
    response = as_user(bob).post("/api/quotes/", {"dataset_id": published_dataset.pk,
                                                   "criteria": {"blood_type": ["A"]}}, format="json")
    body = assert_error(response, 400, "invalid_search")
    assert "blood_type" in body["message"]


def test_it_quotes_nothing_for_a_draft_dataset(dataset, bob, charlie):
    for user in (bob, charlie):
        response = as_user(user).post("/api/quotes/", {"dataset_id": dataset.pk}, format="json")
        assert_error(response, 404, "not_found")


def test_it_refuses_quotes_and_orders_to_anonymous_callers(published_dataset):
    api = as_user(None)
    assert api.post("/api/quotes/", {"dataset_id": published_dataset.pk}, format="json").status_code in (401, 403)
    response = api.post("/api/orders/", {"dataset_id": published_dataset.pk, "accept_agreement": True},
                        format="json")
    assert response.status_code in (401, 403)
    assert not Order.objects.exists()


# ---- placing an order --------------------------------------------------------------------
def test_it_places_an_order_when_the_agreement_is_accepted(published_dataset, bob, dua):
    response = as_user(bob).post("/api/orders/", {"dataset_id": published_dataset.pk, "accept_agreement": True,
                                                  "expected_total": "20.00"}, format="json")
    assert response.status_code == 201
    body = response.json()
    order = Order.objects.get()
    assert body["id"] == order.pk
    assert body["status"] == "awaiting_approval"
    assert body["contract_status"] == "pending"
    assert body["dua_version"] == dua.version
    assert (body["study_count"], body["unit_price"], body["total"], body["currency"]) == (2, "10.00", "20.00", "USD")
    assert body["payment_method"] == "invoice"
    assert order.buyer == bob
    assert order.contract.accepted_by == bob
    assert order.studies.count() == 2
    assert AuditEvent.objects.filter(action="order.place", object_id=str(order.pk), actor=bob).exists()


@pytest.mark.parametrize("accept, code", [(False, "agreement_not_accepted"), (None, "invalid")])
def test_it_refuses_an_order_without_accepting_the_agreement(published_dataset, bob, accept, code):
    data = {"dataset_id": published_dataset.pk}
    if accept is not None:
        data["accept_agreement"] = accept
    body = assert_error(as_user(bob).post("/api/orders/", data, format="json"), 400, code)
    if accept is None:
        assert "accept_agreement" in body["extra"]["fields"]
    assert not Order.objects.exists()
    assert not Contract.objects.exists()


def test_it_refuses_an_order_when_the_price_changed_since_the_quote(published_dataset, bob, alice):
    from catalog.services import dataset_update

    dataset_update(dataset=published_dataset, acting_user=alice, price_per_study=Decimal("12.50"))
    response = as_user(bob).post("/api/orders/", {"dataset_id": published_dataset.pk, "accept_agreement": True,
                                                  "expected_total": "20.00"}, format="json")
    assert_error(response, 400, "price_changed")
    assert not Order.objects.exists()

    response = as_user(bob).post("/api/orders/", {"dataset_id": published_dataset.pk, "accept_agreement": True,
                                                  "expected_total": "25.00"}, format="json")
    assert response.status_code == 201
    assert response.json()["total"] == "25.00"


def test_it_refuses_an_order_that_matches_no_studies(published_dataset, bob):
    response = as_user(bob).post("/api/orders/", {"dataset_id": published_dataset.pk, "accept_agreement": True,
                                                  "criteria": {"body_part": ["KNEE"]}}, format="json")
    assert_error(response, 400, "empty_order")
    assert not Order.objects.exists()


def test_it_refuses_an_order_for_a_draft_dataset_with_404(dataset, bob):
    response = as_user(bob).post("/api/orders/", {"dataset_id": dataset.pk, "accept_agreement": True},
                                 format="json")
    assert_error(response, 404, "not_found")
    assert not Order.objects.exists()


# ---- who sees which order ----------------------------------------------------------------
def test_it_lists_only_the_callers_own_orders(bobs_order, bob, charlie, alice):
    bob_list = as_user(bob).get("/api/orders/")
    assert bob_list.status_code == 200
    assert [row["id"] for row in bob_list.json()] == [bobs_order.pk]

    for other in (charlie, alice):
        response = as_user(other).get("/api/orders/")
        assert response.status_code == 200
        assert response.json() == []


def test_it_shows_an_order_by_id_only_to_its_buyer(bobs_order, bob, charlie, alice):
    url = f"/api/orders/{bobs_order.pk}/"
    response = as_user(bob).get(url)
    assert response.status_code == 200
    assert response.json()["id"] == bobs_order.pk

    for other in (charlie, alice):
        body = assert_error(as_user(other).get(url), 404, "not_found")
        # someone else's order and a missing one are indistinguishable
        missing = as_user(other).get(f"/api/orders/{bobs_order.pk + 10_000}/").json()
        assert body == missing


def test_it_refuses_the_order_api_to_anonymous_callers(bobs_order):
    api = as_user(None)
    for url in ("/api/orders/", f"/api/orders/{bobs_order.pk}/"):
        response = api.get(url)
        assert response.status_code in (401, 403)
        assert response.json()["code"] == "not_authenticated"
        assert str(bobs_order.pk) not in response.content.decode().replace(url, "")


# ---- HTML ordering pages -----------------------------------------------------------------
def test_it_shows_the_price_and_agreement_on_the_order_page(client, published_dataset, bob, dua):
    client.force_login(bob)
    response = client.get(reverse("order_new", args=[published_dataset.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "20.00 USD" in page
    assert '<span class="price" id="quote-total">20.00 USD</span>' in page
    assert dua.title in page
    assert 'name="expected_total" value="20.00"' in page


def test_it_requotes_the_order_page_for_a_filter(client, published_dataset, bob):
    client.force_login(bob)
    sex = published_dataset.sexes[0]
    n = published_dataset.studies.filter(patient_sex=sex).count()
    response = client.get(reverse("order_new", args=[published_dataset.pk]), {"sex": sex})
    assert response.status_code == 200
    assert f"<b>{n}</b> studies" in response.content.decode()


def test_it_shows_an_error_when_the_agreement_is_not_ticked(client, published_dataset, bob):
    client.force_login(bob)
    response = client.post(reverse("order_new", args=[published_dataset.pk]), {"expected_total": "20.00"})
    assert response.status_code == 400
    assert "You must accept the data use agreement" in response.content.decode()
    assert not Order.objects.exists()


def test_it_shows_an_error_when_the_price_changed_on_the_page(client, published_dataset, bob):
    client.force_login(bob)
    response = client.post(reverse("order_new", args=[published_dataset.pk]),
                           {"accept": "on", "expected_total": "5.00"})
    assert response.status_code == 400
    assert "The price changed since you saw it" in response.content.decode()
    assert not Order.objects.exists()


def test_it_places_the_order_from_the_page_and_redirects_to_it(client, published_dataset, bob, charlie):
    client.force_login(bob)
    response = client.post(reverse("order_new", args=[published_dataset.pk]),
                           {"accept": "on", "expected_total": "20.00"})
    order = Order.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("order_detail", args=[order.pk])
    assert order.buyer == bob
    assert order.total == Decimal("20.00")

    page = client.get(response.url)
    assert page.status_code == 200
    assert "Awaiting contract approval" in page.content.decode()
    assert "Order placed." in page.content.decode()
    detail_link = f'href="{reverse("order_detail", args=[order.pk])}"'
    assert detail_link in client.get(reverse("order_list")).content.decode()

    client.force_login(charlie)
    assert client.get(response.url).status_code == 404
    charlies_list = client.get(reverse("order_list")).content.decode()
    assert detail_link not in charlies_list
    assert "No orders yet." in charlies_list


def test_it_sends_anonymous_visitors_to_log_in_from_the_order_pages(client, published_dataset, bobs_order):
    for url in (reverse("order_new", args=[published_dataset.pk]), reverse("order_detail", args=[bobs_order.pk]),
                reverse("order_list")):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_it_gives_404_for_the_order_page_of_a_draft_dataset(client, dataset, bob, charlie):
    for user in (bob, charlie):
        client.force_login(user)
        assert client.get(reverse("order_new", args=[dataset.pk])).status_code == 404


# ---- the transition table ---------------------------------------------------------------
ALL_MOVES = [(old, new) for old in Order.Status for new in Order.Status if old != new]


@pytest.fixture
def bare_order(dataset, bob):
    """An order row in any status; the table test needs no contract or studies."""

    def make(status: str) -> Order:
        return Order.objects.create(buyer=bob, dataset=dataset, study_count=1, unit_price=Decimal("10.00"),
                                    total=Decimal("10.00"), currency="USD",
                                    payment_method=Order.PaymentMethod.INVOICE, status=status)

    return make


@pytest.mark.parametrize("old, new", ALL_MOVES, ids=[f"{o.value}->{n.value}" for o, n in ALL_MOVES])
def test_it_follows_the_order_transition_table(bare_order, admin_user, old, new):
    order = bare_order(old)
    if new in Order.TRANSITIONS[old]:
        moved = order_transition(order=order, to=new, acting_user=admin_user, reason="table test")
        assert moved.status == new
        order.refresh_from_db()
        assert order.status == new
        change = OrderStatusChange.objects.get(order=order)
        assert (change.old_status, change.new_status, change.acting_user, change.reason) == (
            old, new, admin_user, "table test")
    else:
        with pytest.raises(InvalidTransitionError) as excinfo:
            order_transition(order=order, to=new, acting_user=admin_user)
        assert excinfo.value.code == "invalid_transition"
        order.refresh_from_db()
        assert order.status == old
        assert not OrderStatusChange.objects.filter(order=order).exists()


@pytest.mark.parametrize("status", list(Order.Status))
def test_it_is_quiet_when_the_order_is_already_in_the_target_status(bare_order, admin_user, status):
    order = bare_order(status)
    assert order_transition(order=order, to=status, acting_user=admin_user).status == status
    assert not OrderStatusChange.objects.filter(order=order).exists()


def test_every_status_has_a_row_in_the_transition_table():
    assert set(Order.TRANSITIONS) == set(Order.Status)
    for targets in Order.TRANSITIONS.values():
        assert targets <= set(Order.Status)


@pytest.mark.parametrize("status", list(Order.Status))
def test_only_orders_not_yet_delivered_or_closed_can_be_cancelled(bare_order, status):
    assert bare_order(status).can_cancel() is (status in (
        Order.Status.AWAITING_APPROVAL, Order.Status.APPROVED, Order.Status.DELIVERING))
