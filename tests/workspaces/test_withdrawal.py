"""A dataset withdrawn to draft before its data was delivered: the delivery stops as
FAILED with the reason, the order is cancelled, and no link of it works. Data already
delivered follows its licence: its links keep working."""
from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.datasets.services import dataset_transition
from catalog.models import Dataset
from factories.orders import approve_for_delivery, place_order
from marketplace.models import AuditEvent
from orders.models import Order
from orders.services import order_cancel
from workspaces import services as workspace_services
from workspaces.models import Delivery
from workspaces.services import MANIFEST_NAME, delivery_run, download_token_make

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def approved(published_dataset, bob, admin_user, dua) -> Delivery:
    """Bob's order approved; its delivery queued, not yet run."""
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    return Delivery.objects.get(order=order)


def links_of(delivery: Delivery) -> list[str]:
    paths = [MANIFEST_NAME, *delivery.files.values_list("path", flat=True)]
    return [reverse("workspace_download", args=[download_token_make(delivery=delivery, path=p)]) for p in paths]


def withdraw(dataset: Dataset, admin_user) -> None:  # noqa: ANN001
    dataset_transition(dataset=dataset, to=Dataset.Status.DRAFT, acting_user=admin_user, reason="consent withdrawn")


def test_a_queued_delivery_of_a_withdrawn_dataset_fails_with_a_reason(approved, published_dataset, admin_user):
    withdraw(published_dataset, admin_user)
    delivery = delivery_run(delivery_id=approved.pk)
    assert delivery.status == Delivery.Status.FAILED
    assert "withdrawn" in delivery.error
    assert delivery.files.count() == 0
    order = Order.objects.get(pk=approved.order_id)
    assert order.status == Order.Status.CANCELLED
    assert "withdrawn" in order.status_changes.last().reason
    assert AuditEvent.objects.filter(action="delivery.stopped", object_id=str(delivery.pk)).exists()


def test_a_delivery_withdrawn_while_copying_stops_and_its_links_404(client, bob, approved, published_dataset,
                                                                    admin_user, monkeypatch, settings):
    settings.DELIVERY_COPY_THREADS = 1  # the hook withdraws inside the test's transaction
    copy = workspace_services._copy_instance
    calls = []

    def copy_then_withdraw(delivery, instance, **kwargs):  # noqa: ANN001, ANN003, ANN202
        copied = copy(delivery, instance, **kwargs)
        calls.append(instance.pk)
        if len(calls) == 1:
            withdraw(published_dataset, admin_user)
        return copied

    monkeypatch.setattr(workspace_services, "_copy_instance", copy_then_withdraw)
    delivery = delivery_run(delivery_id=approved.pk)
    assert delivery.status == Delivery.Status.FAILED and "withdrawn" in delivery.error
    assert delivery.files.exists()  # some files were copied before it stopped...
    client.force_login(bob)
    for link in links_of(delivery):  # ...and none of them is served
        assert client.get(link).status_code == 404
    assert Order.objects.get(pk=approved.order_id).status == Order.Status.CANCELLED


def test_data_delivered_before_the_withdrawal_stays_downloadable(client, bob, approved, published_dataset,
                                                                 admin_user):
    delivery = delivery_run(delivery_id=approved.pk)
    assert delivery.status == Delivery.Status.DONE
    withdraw(published_dataset, admin_user)
    client.force_login(bob)
    for link in links_of(delivery):
        assert client.get(link).status_code == 200


def test_cancelling_an_approved_order_stops_its_delivery(approved, admin_user):
    order_cancel(order=approved.order, acting_user=admin_user, reason="Contract breach")
    approved.refresh_from_db()
    assert approved.status == Delivery.Status.FAILED and "Contract breach" in approved.error
    assert delivery_run(delivery_id=approved.pk) is None  # the queued task finds nothing to do
    assert Order.objects.get(pk=approved.order_id).status == Order.Status.CANCELLED
