"""Order → contract approval → delivery, through the services (the worker path in-process)."""
from __future__ import annotations

import csv
import hashlib
import io

import pytest

from catalog import storage
from marketplace.exceptions import InvalidTransitionError
from orders.models import Contract, Order
from orders.services import contract_decide, order_place, order_quote
from workspaces.models import Delivery
from workspaces.services import delivery_run

pytestmark = pytest.mark.usefixtures("tiny_threshold")


@pytest.mark.django_db
def test_it_quotes_studies_times_price_and_delivers_matching_files(published_dataset, bob, admin_user, dua):
    quote = order_quote(dataset=published_dataset, criteria={})
    assert quote.study_count == 2
    assert str(quote.total.amount) == "20.00"

    order = order_place(buyer=bob, dataset=published_dataset, criteria={}, accept_agreement=True,
                        dua_template=dua, expected_total=quote.total.amount)
    assert order.status == Order.Status.AWAITING_APPROVAL
    assert order.contract.template_version == dua.version

    contract_decide(contract=order.contract, approve=True, acting_user=admin_user)
    delivery = Delivery.objects.get(order=order)
    delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    order.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE
    assert order.status == Order.Status.DELIVERED
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
    order = order_place(buyer=bob, dataset=published_dataset, criteria={}, accept_agreement=True, dua_template=dua)
    contract_decide(contract=order.contract, approve=True, acting_user=admin_user)
    delivery = Delivery.objects.get(order=order)
    delivery_run(delivery_id=delivery.pk)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.RUNNING)  # as if a worker died
    delivery_run(delivery_id=delivery.pk)
    assert delivery.files.count() == 6


@pytest.mark.django_db
def test_it_rejects_a_contract_only_with_a_reason_and_never_twice(published_dataset, bob, admin_user, dua):
    order = order_place(buyer=bob, dataset=published_dataset, criteria={"sex": ["F", "M"]}, accept_agreement=True,
                        dua_template=dua)
    from orders.exceptions import OrderError

    with pytest.raises(OrderError):
        contract_decide(contract=order.contract, approve=False, acting_user=admin_user, reason="  ")
    contract_decide(contract=order.contract, approve=False, acting_user=admin_user, reason="Purpose unclear")
    order.refresh_from_db()
    assert order.status == Order.Status.REJECTED
    assert order.contract.status == Contract.Status.REJECTED
    assert not Delivery.objects.filter(order=order).exists()
    with pytest.raises(InvalidTransitionError):
        contract_decide(contract=order.contract, approve=True, acting_user=admin_user)


@pytest.mark.django_db
def test_a_provider_sees_revenue_of_approved_sales_only(published_dataset, deliver, bob, charlie, alice, dua):
    from decimal import Decimal

    from django.test import Client

    from orders.selectors import revenue_for_provider_user

    order_place(buyer=charlie, dataset=published_dataset, criteria={}, accept_agreement=True, dua_template=dua)
    assert revenue_for_provider_user(user=alice) == []  # awaiting approval: no revenue yet
    deliver(published_dataset, bob)
    assert revenue_for_provider_user(user=alice) == [("USD", Decimal("20.00"))]
    assert revenue_for_provider_user(user=bob) == []
    client = Client()
    client.force_login(alice)
    page = client.get("/provider/").content.decode()
    assert "20.00 USD" in page and "Chest CT screening" in page
