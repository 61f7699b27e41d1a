"""One cart across datasets and providers: one order with a line per dataset, one
currency, held studies left out, the accepted total is the total, and invoices."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from factories.orders import USE, approve_for_delivery, place_order
from orders.cart import cart_add, cart_include_held, cart_quote
from orders.checkout import checkout
from orders.exceptions import OrderError
from orders.models import Invoice, Order, OrderStatusChange
from orders.quotes import MixedCurrenciesError
from workspaces.models import Delivery
from workspaces.services import delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def test_one_cart_across_two_providers_is_one_order_with_a_line_each(published_dataset, second_provider_dataset,
                                                                     bob, dua):
    order = place_order(bob, [published_dataset, second_provider_dataset], dua)
    lines = {line.dataset_id: line for line in order.lines.all()}
    assert set(lines) == {published_dataset.pk, second_provider_dataset.pk}
    first, second = lines[published_dataset.pk], lines[second_provider_dataset.pk]
    assert (first.provider_id, second.provider_id) == (published_dataset.provider_id,
                                                       second_provider_dataset.provider_id)
    assert first.amount_minor == 1000 * first.study_count
    assert second.amount_minor == 725 * second.study_count
    assert order.total_minor == first.amount_minor + second.amount_minor
    assert first.price_snapshot["total_minor"] == first.amount_minor  # the breakdown travels with the line
    assert set(first.studies.values_list("dataset_id", flat=True)) == {published_dataset.pk}
    assert order.contract.accepted_by == bob
    assert set(order.status_changes.values_list("field", flat=True)) == {
        OrderStatusChange.Field.STATUS, OrderStatusChange.Field.PAYMENT, OrderStatusChange.Field.FULFILMENT}
    assert cart_quote(buyer=bob).lines == ()


def test_a_cart_in_two_currencies_is_refused_with_a_clear_message(published_dataset, second_provider_dataset,
                                                                  bob, dua, make_member):
    from catalog.datasets.services import dataset_update

    dave = second_provider_dataset.provider.memberships.get().user
    dataset_update(dataset=second_provider_dataset, acting_user=dave, currency="EUR")
    for dataset in (published_dataset, second_provider_dataset):
        cart_add(buyer=bob, dataset=dataset)
    quote = cart_quote(buyer=bob)
    assert quote.mixed_currencies and quote.currencies == ["EUR", "USD"]
    with pytest.raises(MixedCurrenciesError, match="EUR, USD"):
        checkout(buyer=bob, payment_method="invoice", accept_agreement=True, dua_template=dua, password="pass-1234567",
                 expected_total_minor=0, expected_currency="USD", **USE)
    assert not Order.objects.exists()


def test_a_plan_change_during_checkout_charges_nothing_different(published_dataset, bob, alice, dua):
    from catalog.datasets.services import dataset_update

    cart_add(buyer=bob, dataset=published_dataset)
    seen = cart_quote(buyer=bob)
    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="flat", price=Decimal("15.00"))
    with pytest.raises(OrderError) as excinfo:
        checkout(buyer=bob, payment_method="invoice", accept_agreement=True, dua_template=dua, password="pass-1234567",
                 expected_total_minor=seen.total_minor, expected_currency=seen.currency, **USE)
    assert excinfo.value.code == "price_changed"
    assert not Order.objects.exists()


def test_a_second_checkout_of_the_same_cart_places_nothing(published_dataset, bob, dua):
    place_order(bob, published_dataset, dua)
    with pytest.raises(OrderError) as excinfo:
        checkout(buyer=bob, payment_method="invoice", accept_agreement=True, dua_template=dua, password="pass-1234567",
                 expected_total_minor=2000, expected_currency="USD", **USE)
    assert excinfo.value.code == "empty_order"
    assert Order.objects.count() == 1


def test_studies_the_organization_holds_are_left_out_unless_included(published_dataset, bob, make_member,
                                                                      admin_user, dua):
    from marketplace.models import Membership, Organization

    first = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    assert first.credit_approved_at is not None
    # A colleague of Bob's organization asks for the same dataset.
    erin, _ = make_member("erin", "Erin's own org", "buyer")
    Membership.objects.filter(user=erin).delete()
    Membership.objects.create(user=erin, organization=Organization.objects.get(name="Bravo AI"))
    cart_add(buyer=erin, dataset=published_dataset)
    quote = cart_quote(buyer=erin)
    assert quote.lines == () and "already holds every study" in quote.problems[0].message
    assert quote.problems[0].all_held
    cart_include_held(buyer=erin, dataset_id=published_dataset.pk, include=True)
    [line] = cart_quote(buyer=erin).lines
    assert line.study_count == 2 and line.held_excluded == 0


def test_an_invoice_is_numbered_downloadable_and_paid_only_with_a_reason(published_dataset, bob, alice, charlie,
                                                                         admin_user, dua, client):
    from orders.invoicing import invoice_settle

    order = place_order(bob, published_dataset, dua, po_number="PO-2026-17")
    invoice = order.invoice
    assert invoice.number.endswith(f"-{invoice.issued.year}-{int(invoice.number.rsplit('-', 1)[1]):06d}")
    assert (invoice.amount_minor, invoice.currency, invoice.po_number, invoice.status) == (
        2000, "USD", "PO-2026-17", Invoice.Status.OPEN)
    assert (invoice.due - invoice.issued).days == 30
    # The buyer gets the document; the provider sees its number and state on the dashboard.
    for user, status in ((bob, 200), (alice, 404), (charlie, 404)):
        client.force_login(user)
        response = client.get(reverse("invoice_download", args=[order.pk]))
        assert response.status_code == status
        if status == 200:
            assert response.content.startswith(b"%PDF") and response["Content-Type"] == "application/pdf"
    client.force_login(alice)
    assert f"invoice {invoice.number}, unpaid" in client.get(reverse("provider_dashboard")).content.decode()
    with pytest.raises(OrderError):
        invoice_settle(invoice=invoice, acting_user=admin_user, reason=" ")
    invoice_settle(invoice=invoice, acting_user=admin_user, reason="Bank transfer REF-9")
    order.refresh_from_db()
    assert order.payment_status == Order.PaymentStatus.PAID
    assert not Delivery.objects.filter(order=order).exists()  # the agreement is still pending
    approve_for_delivery(order, admin_user)
    assert Delivery.objects.filter(order=order).exists()


def test_a_free_dataset_is_ordered_without_payment(published_dataset, bob, alice, admin_user, dua):
    from catalog.datasets.services import dataset_update

    dataset_update(dataset=published_dataset, acting_user=alice, price_per_study=Decimal("0"))
    order = place_order(bob, published_dataset, dua)
    assert (order.payment_method, order.payment_status, order.total_minor) == ("free", "not_required", 0)
    assert not Invoice.objects.filter(order=order).exists()
    approve_for_delivery(order, admin_user)
    delivery = delivery_run(delivery_id=Delivery.objects.get(order=order).pk)
    order.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE
    assert (order.status, order.fulfilment_status) == ("completed", "fulfilled")


def test_payment_by_card_is_offered_only_when_stripe_is_configured(published_dataset, bob, dua, settings):
    settings.STRIPE_SECRET_KEY = ""
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(OrderError) as excinfo:
        checkout(buyer=bob, payment_method="card", accept_agreement=True, dua_template=dua, password="pass-1234567",
                 expected_total_minor=2000, expected_currency="USD", **USE)
    assert excinfo.value.code == "payment_method" and "invoice" in excinfo.value.message
