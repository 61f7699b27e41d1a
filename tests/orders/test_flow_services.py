"""Cart → checkout → contract approval (and credit terms) → delivery, through the
services (the worker path in-process)."""
from __future__ import annotations

import csv
import hashlib
import io

import pytest

import storage
from factories.orders import approval_signature, approve_for_delivery, place_order
from marketplace.exceptions import InvalidTransitionError
from orders.exceptions import OrderError
from orders.models import Contract, Order
from orders.quotes import line_quote
from orders.services import contract_decide, credit_approve
from workspaces.models import Delivery
from workspaces.services import delivery_run

pytestmark = pytest.mark.usefixtures("tiny_threshold")


@pytest.mark.django_db
def test_it_quotes_studies_times_price_and_delivers_matching_files(published_dataset, bob, admin_user, dua):
    quote = line_quote(dataset=published_dataset, criteria={}, buyer=bob)
    assert quote.study_count == 2
    assert quote.total_minor == 2000 and quote.currency == "USD"

    order = place_order(bob, published_dataset, dua)
    assert (order.status, order.payment_status, order.fulfilment_status) == ("open", "unpaid", "unfulfilled")
    assert order.payment_method == Order.PaymentMethod.INVOICE
    assert order.contract.template_version == dua.version
    [line] = order.lines.all()
    assert line.provider_id == published_dataset.provider_id and line.amount_minor == 2000
    assert line.studies.count() == 2

    contract_decide(contract=order.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(order.contract, admin_user))
    assert not Delivery.objects.filter(order=order).exists()  # invoiced: waits for the credit terms
    credit_approve(order=order, acting_user=admin_user)
    delivery = Delivery.objects.get(order=order)
    delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    order.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE
    assert order.fulfilment_status == Order.FulfilmentStatus.FULFILLED
    assert order.status == Order.Status.OPEN  # delivered on credit: open until the invoice is paid
    assert delivery.done_files == delivery.total_files == 6

    manifest = list(csv.DictReader(io.StringIO(b"".join(storage.iter_chunks(delivery.manifest_key)).decode())))
    assert len(manifest) == 6
    for row in manifest:
        key = f"{delivery.prefix}/{row['path']}"
        data = b"".join(storage.iter_chunks(key))
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == int(row["bytes"])


@pytest.mark.django_db
def test_it_runs_a_delivery_twice_without_duplicating_files(published_dataset, bob, admin_user, dua):
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    delivery_run(delivery_id=delivery.pk)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.RUNNING)  # as if a worker died
    delivery_run(delivery_id=delivery.pk)
    assert delivery.files.count() == 6


@pytest.mark.django_db
def test_it_rejects_a_contract_only_with_a_reason_and_never_twice(published_dataset, bob, admin_user, dua):
    order = place_order(bob, published_dataset, dua, criteria={"sex": ["F", "M"]})
    with pytest.raises(OrderError):
        contract_decide(contract=order.contract, approve=False, acting_user=admin_user, reason="  ")
    contract_decide(contract=order.contract, approve=False, acting_user=admin_user, reason="Purpose unclear")
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.contract.status == Contract.Status.REJECTED
    assert order.invoice.status == "void"  # the invoice of a rejected order is not owed
    assert not Delivery.objects.filter(order=order).exists()
    with pytest.raises(InvalidTransitionError):
        contract_decide(contract=order.contract, approve=True, acting_user=admin_user,
                        signature=approval_signature(order.contract, admin_user))


@pytest.mark.django_db
def test_a_provider_sees_net_earnings_of_paid_sales_only(published_dataset, deliver, bob, charlie, alice, dua,
                                                          admin_user):
    from django.test import Client

    from orders.invoicing import invoice_settle

    place_order(charlie, published_dataset, dua)
    client = Client()
    client.force_login(alice)
    page = client.get("/provider/").content.decode()
    assert "Chest CT screening" in page
    deliver(published_dataset, bob)
    order = Order.objects.get(buyer=bob)
    invoice_settle(invoice=order.invoice, acting_user=admin_user, reason="Bank transfer REF-1")
    page = client.get("/provider/").content.decode()
    # 2 × 10.00 USD for each order; the platform keeps 15 %: 17.00 net per order.
    assert "40.00 USD" in page  # sales invoiced to both buyers
    assert "6.00 USD" in page  # fees on both
    order.refresh_from_db()
    assert order.payment_status == Order.PaymentStatus.PAID
    assert order.status == Order.Status.COMPLETED
