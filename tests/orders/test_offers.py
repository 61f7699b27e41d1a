"""Negotiated offers: a researcher's request, the provider's offer, counters, acceptance
into the cart at the offered price and terms, checkout with the offer on the order line,
and every refusal (audited), expiry and the notices each step sends."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from factories.orders import BUYER_PASSWORD, USE
from marketplace.exceptions import NotFoundError
from marketplace.models import AuditEvent, Notification
from orders.cart import cart_items, cart_quote
from orders.checkout import checkout
from orders.entitlements import entitlements_start
from orders.exceptions import OrderError
from orders.models import CartItem, Offer, OfferStatusChange
from orders.offers import (
    OfferError,
    negotiation_from_response,
    negotiation_request,
    negotiation_versions,
    offer_accept,
    offer_cart_add,
    offer_decline,
    offer_make,
    offer_withdraw,
    offers_expire,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

WANTED = {"use": "commercial", "term_months": 24, "seats": 3, "derivative_models": True, "publication": True}
OFFERED = {"use": "commercial", "term_months": 12, "seats": 3, "derivative_models": False, "publication": True}


@pytest.fixture
def site(settings):
    settings.SITE_URL = "https://medimage.example"


@pytest.fixture
def request_v0(bob, published_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        negotiation = negotiation_request(buyer=bob, dataset=published_dataset, price_minor=1500, currency="USD",
                                          terms=WANTED, criteria={"modality": ["CT"]},
                                          message="We need commercial use for two years.")
    return negotiation


def _offer(negotiation, number):  # noqa: ANN001, ANN202
    return negotiation.offers.get(number=number)


def _refusals(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=f"{action}.refused"))


def _checkout(buyer, dua, *, expected):  # noqa: ANN001, ANN202
    return checkout(buyer=buyer, payment_method="invoice", accept_agreement=True, dua_template=dua,
                    expected_total_minor=expected, expected_currency="USD", password=BUYER_PASSWORD, **USE)


# ---- the whole flow --------------------------------------------------------------------

def test_request_offer_counter_accept_then_checkout_buys_at_the_offer(
        site, request_v0, bob, alice, dua, django_capture_on_commit_callbacks):
    negotiation = request_v0
    request = _offer(negotiation, 0)
    assert (request.side, request.status, request.price_minor, request.dua_version) == ("buyer", "open", 1500,
                                                                                       dua.version)
    assert request.expires_at - timezone.now() > timedelta(days=13)  # the default validity
    assert Notification.objects.filter(user=alice).exists()  # the provider hears of the request

    with django_capture_on_commit_callbacks(execute=True):
        v1 = offer_make(negotiation_id=negotiation.pk, acting_user=alice, price_minor=3000, currency="USD",
                        terms=OFFERED, message="One year; models are deleted at the end.")
    assert v1.number == 1 and v1.side == "provider"
    request.refresh_from_db()
    assert request.status == "superseded"

    with django_capture_on_commit_callbacks(execute=True):
        v2 = offer_make(negotiation_id=negotiation.pk, acting_user=bob, price_minor=2400, currency="USD",
                        terms={**OFFERED, "derivative_models": True})
    v1.refresh_from_db()
    assert (v2.number, v2.side, v1.status) == (2, "buyer", "superseded")

    with django_capture_on_commit_callbacks(execute=True):
        accepted = offer_accept(offer_id=v2.pk, acting_user=alice)
    assert accepted.status == "accepted" and accepted.decided_by == alice

    # The provider accepted the buyer's counter: it is in the requester's cart at its price.
    item = CartItem.objects.get(cart__buyer=bob)
    assert item.offer_id == v2.pk and item.criteria == {"modality": ["CT"]}
    quote = cart_quote(buyer=bob)
    assert not quote.problems
    (line,) = quote.lines
    assert line.total_minor == 2400 and line.offer == v2
    assert line.price.model == "offer"

    order = _checkout(bob, dua, expected=2400)
    (order_line,) = order.lines.all()
    assert order_line.amount_minor == 2400 and order.total_minor == 2400
    assert order_line.offer_id == v2.pk and order_line.pricing_model == "offer"
    assert order_line.licence_terms == v2.terms
    # The signed agreement states the negotiated terms, not the dataset's.
    contract_text = order.contract.text
    assert f"Negotiated terms: negotiation #{negotiation.pk}, version 2" in contract_text
    assert "Models trained on the data: May be kept and used" in contract_text
    # The 12-month term starts when access is granted, not at checkout.
    assert order_line.licence_ends is None
    entitlements_start(order=order)
    order_line.refresh_from_db()
    assert 360 <= (order_line.licence_ends - timezone.now()).days <= 366

    # Every step told the other side, in the app and by e-mail with an absolute link.
    bob_notes = list(Notification.objects.filter(user=bob).values_list("message", flat=True))
    assert any("made an offer (version 1" in m for m in bob_notes)
    assert any("accepted version 2" in m and "in your cart" in m for m in bob_notes)
    alice_notes = list(Notification.objects.filter(user=alice).values_list("message", flat=True))
    assert any("asks for different terms" in m for m in alice_notes)
    assert any("counter-offer (version 2" in m for m in alice_notes)
    url = f"https://medimage.example{reverse('negotiation_detail', args=[negotiation.pk])}"
    assert Notification.objects.filter(user=bob, url=url).exists()
    assert {tuple(m.to) for m in mail.outbox} == {(bob.email,), (alice.email,)}
    assert all(url in m.body for m in mail.outbox)
    assert list(OfferStatusChange.objects.filter(offer=v2).values_list("old_status", "new_status")) == [
        ("", "open"), ("open", "accepted")]


def test_the_buyer_accepting_the_providers_offer_fills_the_accepting_members_cart(request_v0, bob, alice):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=1800, currency="USD",
                    terms=OFFERED)
    offer_accept(offer_id=v1.pk, acting_user=bob)
    (line,) = cart_quote(buyer=bob).lines
    assert line.total_minor == 1800 and line.offer == v1


def test_an_offer_serves_one_order_only(request_v0, bob, alice, make_member, dua):
    colleague, _ = make_member("bea", "Bravo AI", "buyer")
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=1800, currency="USD",
                    terms=OFFERED)
    offer_accept(offer_id=v1.pk, acting_user=bob)
    offer_cart_add(offer_id=v1.pk, acting_user=colleague)  # two carts hold the same offer
    order = _checkout(bob, dua, expected=1800)
    assert order.lines.get().offer == v1
    problem = cart_quote(buyer=colleague).problems[0]
    assert f"already used for order #{order.pk}" in problem.message
    with pytest.raises(OrderError) as excinfo:
        _checkout(colleague, dua, expected=1800)
    assert excinfo.value.code == "cart_item_unavailable"
    with pytest.raises(OfferError, match="already used"):
        offer_cart_add(offer_id=v1.pk, acting_user=bob)
    assert _refusals("offer.cart_add")


def test_adding_the_dataset_again_from_its_page_drops_the_offer_price(request_v0, bob, alice, published_dataset):
    from orders.cart import cart_add

    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=1, currency="USD", terms=OFFERED)
    offer_accept(offer_id=v1.pk, acting_user=bob)
    cart_add(buyer=bob, dataset=published_dataset)
    (item,) = cart_items(bob)
    assert item.offer is None
    assert cart_quote(buyer=bob).lines[0].total_minor == 1000 * 2  # the plan's price again


# ---- what the thread shows -------------------------------------------------------------

def test_each_version_shows_what_changed_from_the_one_before(request_v0, bob, alice):
    offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=300000, currency="USD", terms=OFFERED)
    v2 = offer_make(negotiation_id=request_v0.pk, acting_user=bob, price_minor=250000, currency="USD",
                    terms={**OFFERED, "seats": None})
    offer_decline(offer_id=v2.pk, acting_user=alice, reason="Seats must stay named.")
    rows = negotiation_versions(request_v0)
    assert [r["offer"].number for r in rows] == [0, 1, 2]
    assert rows[0]["changes"] == []
    assert rows[1]["changes"] == [
        ("Price", "15.00 USD", "3,000.00 USD"), ("Term", "2 years", "1 year"),
        ("Models trained on the data", "May be kept and used", "Must be deleted at the end of the term")]
    assert rows[2]["changes"] == [("Price", "3,000.00 USD", "2,500.00 USD"),
                                  ("Named users", "3", "Whole buyer organization")]
    assert [r["status_words"] for r in rows] == ["Superseded by version 1", "Superseded by version 2",
                                                 "Declined: Seats must stay named."]
    assert ("Use", "Research and commercial use") in rows[1]["terms"]


def test_the_thread_page_shows_versions_and_is_private(client, request_v0, bob, alice, charlie):
    offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=300000, currency="USD", terms=OFFERED)
    url = reverse("negotiation_detail", args=[request_v0.pk])
    client.force_login(bob)
    page = client.get(url).content.decode()
    assert "3,000.00 USD" in page and "Superseded by version 1" in page and "1 year" in page
    assert "Accept" in page
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    assert client.get(reverse("negotiation_list")).content.decode().count(url) == 0
    client.force_login(alice)
    assert url in client.get(reverse("provider_negotiations")).content.decode()
    client.force_login(bob)
    assert url in client.get(reverse("negotiation_list")).content.decode()


def test_expired_offers_read_as_expired_on_the_page(client, request_v0, bob, alice):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    Offer.objects.filter(pk=v1.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    client.force_login(bob)
    page = client.get(reverse("negotiation_detail", args=[request_v0.pk])).content.decode()
    assert "Expired on" in page
    v1.refresh_from_db()
    assert v1.status == "expired"


# ---- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("status, message", [
    ("superseded", "superseded by version 2"),
    ("withdrawn", "was withdrawn"),
    ("declined", "was declined"),
])
def test_versions_no_longer_open_cannot_be_accepted(request_v0, bob, alice, status, message):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    if status == "superseded":
        offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=90, currency="USD", terms=OFFERED)
    elif status == "withdrawn":
        offer_withdraw(offer_id=v1.pk, acting_user=alice)
    else:
        offer_decline(offer_id=v1.pk, acting_user=bob, reason="Too dear")
    with pytest.raises(OfferError, match=message):
        offer_accept(offer_id=v1.pk, acting_user=bob)
    (event,) = _refusals("offer.accept")
    assert event.actor == bob and event.object_id == str(v1.pk) and event.detail["code"] == f"offer_{status}"
    assert not CartItem.objects.exists()


def test_an_expired_offer_cannot_be_accepted_and_is_marked_expired(request_v0, bob, alice):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    Offer.objects.filter(pk=v1.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(OfferError, match="expired on"):
        offer_accept(offer_id=v1.pk, acting_user=bob)
    v1.refresh_from_db()
    assert v1.status == "expired"
    assert _refusals("offer.accept")[0].detail["code"] == "offer_expired"


def test_nobody_accepts_their_own_sides_version(request_v0, bob, alice, make_member):
    colleague, _ = make_member("bea", "Bravo AI", "buyer")
    with pytest.raises(OfferError, match="your own side's version"):
        offer_accept(offer_id=_offer(request_v0, 0).pk, acting_user=colleague)
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    with pytest.raises(OfferError, match="your own side's version"):
        offer_accept(offer_id=v1.pk, acting_user=alice)
    assert [e.detail["code"] for e in _refusals("offer.accept")] == ["own_offer", "own_offer"]


def test_another_organizations_member_can_neither_see_nor_act(client, request_v0, charlie,
                                                              second_provider_dataset):
    dave = second_provider_dataset.provider.memberships.get().user  # another provider
    request = _offer(request_v0, 0)
    for outsider in (charlie, dave):
        with pytest.raises(NotFoundError):
            offer_accept(offer_id=request.pk, acting_user=outsider)
        with pytest.raises(NotFoundError):
            offer_make(negotiation_id=request_v0.pk, acting_user=outsider, price_minor=1, currency="USD",
                       terms=OFFERED)
        client.force_login(outsider)
        assert client.get(reverse("negotiation_detail", args=[request_v0.pk])).status_code == 404
        assert client.post(reverse("offer_act", args=[request.pk]), {"action": "accept"}).status_code == 404
    assert {e.actor_label for e in _refusals("offer.accept")} == {"charlie", "dave"}
    assert {e.detail["code"] for e in _refusals("offer.make")} == {"not_found"}
    request.refresh_from_db()
    assert request.status == "open"


def test_staff_read_a_negotiation_but_do_not_act_in_it(client, request_v0, admin_user):
    client.force_login(admin_user)
    assert client.get(reverse("negotiation_detail", args=[request_v0.pk])).status_code == 200
    with pytest.raises(OfferError, match="Only members of the two organizations"):
        offer_accept(offer_id=_offer(request_v0, 0).pk, acting_user=admin_user)


@pytest.mark.parametrize("price, terms, message", [
    (-1, OFFERED, "cannot be negative"),
    (10**30, OFFERED, "too large"),
    (100, {**OFFERED, "use": "resale"}, "Licence use must be one of research, commercial"),
    (100, {**OFFERED, "redistribution": True}, "Redistribution of the data is never allowed"),
    (100, {**OFFERED, "term_months": 500}, "Licence term_months must be between 1 and 120"),
])
def test_bad_prices_and_terms_are_refused_with_the_reason(request_v0, alice, price, terms, message):
    with pytest.raises(OfferError, match=message):
        offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=price, currency="USD", terms=terms)
    (event,) = _refusals("offer.make")
    assert event.detail["code"] in ("price_negative", "price_invalid", "terms_invalid")
    assert request_v0.offers.count() == 1


def test_a_request_with_an_expiry_in_the_past_is_refused(bob, published_dataset):
    with pytest.raises(OfferError, match="expiry must be in the future"):
        negotiation_request(buyer=bob, dataset=published_dataset, price_minor=100, currency="USD", terms=WANTED,
                            expires_at=timezone.now() - timedelta(days=1))
    assert _refusals("negotiation.request")[0].detail["code"] == "expiry_past"


def test_only_the_author_side_withdraws_and_decline_needs_a_reason(request_v0, bob, alice):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    with pytest.raises(OfferError, match="Only the side that made a version"):
        offer_withdraw(offer_id=v1.pk, acting_user=bob)
    with pytest.raises(OfferError, match="Say why"):
        offer_decline(offer_id=v1.pk, acting_user=bob, reason="  ")
    assert offer_withdraw(offer_id=v1.pk, acting_user=alice).status == "withdrawn"


def test_no_version_follows_an_accepted_one(request_v0, bob, alice):
    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    offer_accept(offer_id=v1.pk, acting_user=bob)
    with pytest.raises(OfferError, match="version 1 was accepted"):
        offer_make(negotiation_id=request_v0.pk, acting_user=bob, price_minor=50, currency="USD", terms=OFFERED)


# ---- expiry by the periodic task --------------------------------------------------------

def test_the_periodic_task_expires_due_offers_once_and_tells_the_author(
        request_v0, bob, alice, settings, django_capture_on_commit_callbacks):
    from orders.tasks import offers_expire_task

    v1 = offer_make(negotiation_id=request_v0.pk, acting_user=alice, price_minor=100, currency="USD", terms=OFFERED)
    assert offers_expire() == 0
    Offer.objects.filter(pk=v1.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert offers_expire_task() == 1
    assert offers_expire_task() == 0  # a second run finds nothing
    v1.refresh_from_db()
    assert v1.status == "expired"
    assert Notification.objects.filter(user=alice, message__contains="expired").count() == 1
    assert [m.to for m in mail.outbox] == [[alice.email]]
    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule[offers_expire_task.name]["options"]["queue"] == "housekeeping"


# ---- the data-request board ------------------------------------------------------------

def test_a_providers_answer_on_the_board_becomes_a_real_offer(bob, alice, published_dataset, charlie):
    from catalog.discovery.services import data_request_create, data_request_respond

    data_request = data_request_create(requester=bob, title="Chest CT", description="Low-dose chest CT")
    response = data_request_respond(data_request=data_request, responder=alice,
                                    provider_id=published_dataset.provider_id, offer="We have some.")
    negotiation = negotiation_from_response(response=response, acting_user=alice, dataset_id=published_dataset.pk,
                                            price_minor=5000, currency="USD", terms=OFFERED)
    (v1,) = negotiation.offers.all()
    assert (v1.number, v1.side, negotiation.data_request, negotiation.requester) == (1, "provider", data_request, bob)
    assert negotiation.buyer_organization.name == "Bravo AI"
    offer_accept(offer_id=v1.pk, acting_user=bob)
    assert cart_quote(buyer=bob).lines[0].total_minor == 5000
    with pytest.raises(OfferError, match="Only members of the provider"):
        negotiation_from_response(response=response, acting_user=charlie, dataset_id=published_dataset.pk,
                                  price_minor=1, currency="USD", terms=OFFERED)


# ---- the pages -------------------------------------------------------------------------

def test_the_pages_take_a_request_a_counter_and_an_acceptance_into_the_cart(
        client, bob, alice, published_dataset, charlie):
    client.force_login(bob)
    assert reverse("negotiation_new", args=[published_dataset.pk]) in client.get(
        reverse("dataset_detail", args=[published_dataset.pk])).content.decode()
    form = client.get(reverse("negotiation_new", args=[published_dataset.pk]), {"modality": "CT"}).content.decode()
    assert 'name="modality" value="CT"' in form
    answer = client.post(reverse("negotiation_new", args=[published_dataset.pk]), {
        "modality": "CT", "price": "15.00", "currency": "USD", "use": "commercial", "term_months": "24",
        "seats": "3", "derivative_models": "on", "publication": "on", "territory": "worldwide",
        "access": "download", "message": "Two years, please."})
    negotiation = bob.negotiations.get()
    assert answer.status_code == 302 and answer.url == reverse("negotiation_detail", args=[negotiation.pk])
    request = negotiation.offers.get()
    assert (negotiation.criteria, request.price_minor, request.terms["term_months"]) == ({"modality": ["CT"]},
                                                                                        1500, 24)

    client.force_login(alice)
    detail = reverse("negotiation_detail", args=[negotiation.pk])
    refused = client.post(detail, {"price": "20.00", "currency": "USD", "use": "commercial", "term_months": "500"})
    assert refused.status_code == 400
    assert "Licence term_months must be between 1 and 120, not 500." in refused.content.decode()
    negative = client.post(detail, {"price": "-5", "currency": "USD", "use": "research"})
    assert "The price cannot be negative." in negative.content.decode()
    client.post(detail, {"price": "20.00", "currency": "USD", "use": "commercial", "term_months": "12",
                         "seats": "3", "publication": "on"})
    v1 = negotiation.offers.get(number=1)
    assert v1.price_minor == 2000 and v1.terms["derivative_models"] is False
    page = client.get(detail).content.decode()
    assert "Superseded by version 1" in page and "Withdraw" in page

    client.force_login(bob)
    page = client.get(detail).content.decode()
    assert "15.00 USD" in page and "20.00 USD" in page and "2 years" in page and "1 year" in page
    accepted = client.post(reverse("offer_act", args=[v1.pk]), {"action": "accept"})
    assert accepted.url == reverse("cart")
    cart_page = client.get(reverse("cart")).content.decode()
    assert "At the negotiated offer" in cart_page and "20.00 USD" in cart_page
    assert "Research and commercial use" in cart_page and "1 year" in cart_page  # the offer's terms
    again = client.post(reverse("offer_act", args=[v1.pk]), {"action": "accept"}, follow=True)
    assert "Version 1 was already accepted." in again.content.decode()

    client.force_login(charlie)
    assert client.get(detail).status_code == 404
    assert client.post(detail, {"price": "1", "currency": "USD"}).status_code == 404


def test_a_provider_makes_its_board_answer_an_offer_through_the_page(client, bob, alice, charlie,
                                                                      published_dataset):
    from catalog.discovery.services import data_request_create, data_request_respond

    data_request = data_request_create(requester=bob, title="Chest CT", description="Low-dose chest CT")
    response = data_request_respond(data_request=data_request, responder=alice,
                                    provider_id=published_dataset.provider_id, offer="We have some.")
    url = reverse("negotiation_from_board", args=[data_request.pk, response.pk])
    client.force_login(alice)
    assert url in client.get(reverse("data_request_detail", args=[data_request.pk])).content.decode()
    answer = client.post(url, {"dataset": str(published_dataset.pk), "price": "99.50", "currency": "USD",
                               "use": "research", "term_months": "", "seats": ""})
    negotiation = data_request.negotiations.get()
    assert answer.url == reverse("negotiation_detail", args=[negotiation.pk])
    offer = negotiation.offers.get()
    assert offer.price_minor == 9950 and offer.terms["term_months"] is None and offer.side == "provider"
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    client.force_login(bob)
    assert "Perpetual" in client.get(answer.url).content.decode()


def test_staff_see_a_negotiation_in_the_admin_without_changing_it(client, request_v0, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("admin:orders_negotiation_change", args=[request_v0.pk]))
    assert page.status_code == 200 and "15.00 USD" in page.content.decode()
    assert client.get(reverse("admin:orders_negotiation_add")).status_code == 403


def test_a_huge_typed_price_gets_a_form_error_not_a_server_error(client, request_v0, alice):
    client.force_login(alice)
    response = client.post(reverse("negotiation_detail", args=[request_v0.pk]),
                           {"price": "9" * 40, "currency": "USD", "use": "research", "term_months": "12",
                            "territory": "worldwide", "access": "download"})
    assert response.status_code in (200, 400) and "too large" in response.content.decode()
    assert request_v0.offers.count() == 1
