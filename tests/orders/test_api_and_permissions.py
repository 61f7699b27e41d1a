"""Orders: the API (quote, cart, checkout), the HTML ordering pages, who sees which order,
and the three transition tables."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from factories.orders import USE, place_order
from marketplace.exceptions import InvalidTransitionError
from marketplace.models import AuditEvent
from orders.models import Contract, Order, OrderStatusChange
from orders.transitions import TABLES, order_move

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
    return place_order(bob, published_dataset, dua)


def checkout_body(**overrides) -> dict:  # noqa: ANN003
    return {"accept_agreement": True, "payment_method": "invoice", "expected_total_minor": 2000,
            "expected_currency": "USD", "password": "pass-1234567", **USE, **overrides}


# ---- quote -----------------------------------------------------------------------------
def test_it_quotes_the_whole_dataset_and_a_filtered_subset(published_dataset, bob):
    api = as_user(bob)
    whole = api.post("/api/quotes/", {"dataset_id": published_dataset.pk}, format="json")
    assert whole.status_code == 200
    body = whole.json()
    assert (body["dataset_id"], body["criteria"], body["study_count"], body["total_minor"], body["currency"],
            body["pricing_model"]) == (published_dataset.pk, {}, 2, 2000, "USD", "per_study")
    assert sum(row["amount_minor"] for row in body["breakdown"]) == 2000

    sexes = published_dataset.sexes
    subset = api.post("/api/quotes/", {"dataset_id": published_dataset.pk, "criteria": {"sex": [sexes[0]]}},
                      format="json").json()
    expected = published_dataset.studies.filter(patient_sex=sexes[0]).count()
    assert subset["study_count"] == expected
    assert subset["total_minor"] == 1000 * expected


def test_it_refuses_a_quote_with_an_unknown_study_filter(published_dataset, bob):
    response = as_user(bob).post("/api/quotes/", {"dataset_id": published_dataset.pk,
                                                   "criteria": {"blood_type": ["A"]}}, format="json")
    body = assert_error(response, 400, "invalid_search")
    assert "blood_type" in body["message"]


def test_it_quotes_nothing_for_a_draft_dataset(dataset, bob, charlie):
    for user in (bob, charlie):
        response = as_user(user).post("/api/quotes/", {"dataset_id": dataset.pk}, format="json")
        assert_error(response, 404, "not_found")


def test_it_refuses_quotes_carts_and_orders_to_anonymous_callers(published_dataset):
    api = as_user(None)
    assert api.post("/api/quotes/", {"dataset_id": published_dataset.pk}, format="json").status_code in (401, 403)
    assert api.post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json").status_code in (401, 403)
    response = api.post("/api/orders/", checkout_body(), format="json")
    assert response.status_code in (401, 403)
    assert not Order.objects.exists()


# ---- cart and checkout -----------------------------------------------------------------------
def test_it_places_an_order_from_the_cart_when_the_agreement_is_accepted(published_dataset, bob, dua):
    api = as_user(bob)
    cart = api.post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json")
    assert cart.status_code == 201
    assert (cart.json()["total_minor"], cart.json()["currency"]) == (2000, "USD")
    response = api.post("/api/orders/", checkout_body(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    order = Order.objects.get()
    assert body["id"] == order.pk
    assert (body["status"], body["payment_status"], body["fulfilment_status"]) == ("open", "unpaid", "unfulfilled")
    assert body["contract_status"] == "pending"
    assert body["dua_version"] == dua.version
    assert (body["total_minor"], body["currency"], body["payment_method"]) == (2000, "USD", "invoice")
    assert body["invoice_number"] == order.invoice.number
    [line] = body["lines"]
    assert (line["dataset_id"], line["study_count"], line["amount_minor"]) == (published_dataset.pk, 2, 2000)
    assert order.buyer == bob and order.contract.accepted_by == bob
    assert order.lines.get().studies.count() == 2
    assert AuditEvent.objects.filter(action="order.place", object_id=str(order.pk), actor=bob).exists()
    assert api.get("/api/cart/").json()["lines"] == []  # the cart is emptied by checkout


@pytest.mark.parametrize("accept, code", [(False, "agreement_not_accepted"), (None, "invalid")])
def test_it_refuses_an_order_without_accepting_the_agreement(published_dataset, bob, accept, code):
    as_user(bob).post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json")
    data = checkout_body()
    if accept is None:
        del data["accept_agreement"]
    else:
        data["accept_agreement"] = accept
    body = assert_error(as_user(bob).post("/api/orders/", data, format="json"), 400, code)
    if accept is None:
        assert "accept_agreement" in body["extra"]["fields"]
    assert not Order.objects.exists()
    assert not Contract.objects.exists()


def test_it_refuses_an_order_when_the_price_changed_since_the_quote(published_dataset, bob, alice):
    from catalog.datasets.services import dataset_update

    as_user(bob).post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json")
    dataset_update(dataset=published_dataset, acting_user=alice, price_per_study=Decimal("12.50"))
    assert_error(as_user(bob).post("/api/orders/", checkout_body(), format="json"), 400, "price_changed")
    assert not Order.objects.exists()

    response = as_user(bob).post("/api/orders/", checkout_body(expected_total_minor=2500), format="json")
    assert response.status_code == 201
    assert response.json()["total_minor"] == 2500


def test_it_refuses_to_add_a_selection_that_matches_no_studies(published_dataset, bob):
    as_user(bob).post("/api/cart/", {"dataset_id": published_dataset.pk, "criteria": {"body_part": ["KNEE"]}},
                      format="json")
    cart = as_user(bob).get("/api/cart/").json()
    assert cart["lines"] == [] and cart["problems"][0]["message"] == "No studies match this selection."
    assert_error(as_user(bob).post("/api/orders/", checkout_body(), format="json"), 400, "cart_item_unavailable")
    assert not Order.objects.exists()


def test_it_refuses_a_draft_dataset_in_the_cart_with_404(dataset, bob):
    response = as_user(bob).post("/api/cart/", {"dataset_id": dataset.pk}, format="json")
    assert_error(response, 404, "not_found")
    assert_error(as_user(bob).post("/api/orders/", checkout_body(), format="json"), 400, "empty_order")
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
def test_it_shows_the_price_line_by_line_on_the_dataset_order_page(client, published_dataset, bob, dua):
    client.force_login(bob)
    response = client.get(reverse("order_new", args=[published_dataset.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="quote-total">20.00 USD</th>' in page
    assert "Add to cart (20.00 USD)" in page


def test_it_requotes_the_order_page_for_a_filter(client, published_dataset, bob):
    client.force_login(bob)
    sex = published_dataset.sexes[0]
    n = published_dataset.studies.filter(patient_sex=sex).count()
    response = client.get(reverse("order_new", args=[published_dataset.pk]), {"sex": sex})
    assert response.status_code == 200
    assert f"{n * 10}.00 USD" in response.content.decode()


def test_it_shows_an_error_when_the_agreement_is_not_ticked(client, published_dataset, bob):
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    response = client.post(reverse("cart_checkout"), {"expected_total_minor": "2000", "payment_method": "invoice", **USE},
                           follow=True)
    assert "You must accept the data use agreement" in response.content.decode()
    assert not Order.objects.exists()


def test_it_shows_an_error_when_the_price_changed_on_the_page(client, published_dataset, bob):
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    response = client.post(reverse("cart_checkout"), {"accept": "on", "expected_total_minor": "500",
                                                       "payment_method": "invoice", "password": "pass-1234567",
                                                       **USE},
                           follow=True)
    assert "The price changed since you saw it" in response.content.decode()
    assert not Order.objects.exists()


def test_it_places_the_order_from_the_cart_page_and_redirects_to_it(client, published_dataset, bob, charlie):
    client.force_login(bob)
    added = client.post(reverse("order_new", args=[published_dataset.pk]), {})
    assert added.status_code == 302 and added.url == reverse("cart")
    cart_page = client.get(reverse("cart")).content.decode()
    assert 'name="expected_total_minor" value="2000"' in cart_page and "Chest CT screening" in cart_page
    response = client.post(reverse("cart_checkout"), {"accept": "on", "expected_total_minor": "2000",
                                                      "expected_currency": "USD", "payment_method": "invoice",
                                                      "po_number": "PO-77", "password": "pass-1234567", **USE})
    order = Order.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("order_detail", args=[order.pk])
    assert order.buyer == bob and order.total_minor == 2000 and order.invoice.po_number == "PO-77"
    again = client.post(reverse("cart_checkout"), {"accept": "on", "expected_total_minor": "2000",
                                                   "payment_method": "invoice", "password": "pass-1234567", **USE})
    assert again.url == reverse("order_detail", args=[order.pk]) and Order.objects.count() == 1  # double click

    page = client.get(response.url).content.decode()
    assert "Pending admin review" in page and "Order placed and invoiced." in page
    assert order.invoice.number in page
    detail_link = f'href="{reverse("order_detail", args=[order.pk])}"'
    assert detail_link in client.get(reverse("order_list")).content.decode()

    client.force_login(charlie)
    assert client.get(response.url).status_code == 404
    assert client.get(reverse("invoice_download", args=[order.pk])).status_code == 404
    charlies_list = client.get(reverse("order_list")).content.decode()
    assert detail_link not in charlies_list
    assert "No orders yet." in charlies_list


def test_it_sends_anonymous_visitors_to_log_in_from_the_order_pages(client, published_dataset, bobs_order):
    for url in (reverse("order_new", args=[published_dataset.pk]), reverse("order_detail", args=[bobs_order.pk]),
                reverse("order_list"), reverse("cart"), reverse("invoice_download", args=[bobs_order.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_it_gives_404_for_the_order_page_of_a_draft_dataset(client, dataset, bob, charlie):
    for user in (bob, charlie):
        client.force_login(user)
        assert client.get(reverse("order_new", args=[dataset.pk])).status_code == 404


# ---- the three transition tables -------------------------------------------------------------
MOVES = [(field, old, new) for field, (table, labels) in TABLES.items() for old in labels for new in labels
         if old != new]


@pytest.fixture
def bare_order(bob):
    """An order row with any statuses; the table test needs no lines or contract."""

    def make(**statuses: str) -> Order:
        return Order.objects.create(buyer=bob, total_minor=1000, currency="USD",
                                    payment_method=Order.PaymentMethod.INVOICE,
                                    **{"payment_status": "unpaid", **statuses})

    return make


@pytest.mark.parametrize("field, old, new", MOVES, ids=[f"{f}:{o}->{n}" for f, o, n in MOVES])
def test_it_follows_each_transition_table(bare_order, admin_user, field, old, new):
    order = bare_order(**{field: old})
    table, _ = TABLES[field]
    if new in table[old]:
        moved = order_move(order=order, field=field, to=new, acting_user=admin_user, reason="table test")
        assert getattr(moved, field) == new
        order.refresh_from_db()
        assert getattr(order, field) == new
        change = OrderStatusChange.objects.get(order=order)
        assert (change.field, change.old_status, change.new_status, change.acting_user, change.reason) == (
            field, old, new, admin_user, "table test")
    else:
        with pytest.raises(InvalidTransitionError) as excinfo:
            order_move(order=order, field=field, to=new, acting_user=admin_user)
        assert excinfo.value.code == "invalid_transition"
        order.refresh_from_db()
        assert getattr(order, field) == old
        assert not OrderStatusChange.objects.filter(order=order).exists()


@pytest.mark.parametrize("field", list(TABLES))
def test_it_is_quiet_when_a_status_is_already_the_target(bare_order, admin_user, field):
    table, labels = TABLES[field]
    for status in labels:
        order = bare_order(**{field: status})
        assert getattr(order_move(order=order, field=field, to=status, acting_user=admin_user), field) == status
        assert not OrderStatusChange.objects.filter(order=order).exists()


@pytest.mark.parametrize("field", list(TABLES))
def test_every_status_has_a_row_in_its_transition_table(field):
    table, labels = TABLES[field]
    assert set(table) == set(labels)
    for targets in table.values():
        assert targets <= set(labels)
