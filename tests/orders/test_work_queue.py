"""The admin work queue (orders/work_queue.py): what waits for an administrator, per kind,
oldest first, and nothing already decided; shown on the admin index to staff only."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from catalog.datasets.services import dataset_create, dataset_publish, dataset_submit_for_review
from factories.dicom import ct_files
from factories.orders import approve_for_delivery, place_order
from marketplace.models import Organization
from marketplace.vetting import organization_buyer_reject, organization_provider_reject
from orders.models import Order
from orders.transitions import order_move
from orders.work_queue import ITEMS_PER_KIND, work_queue

pytestmark = pytest.mark.django_db


def _queue(user) -> dict:  # noqa: ANN001
    return {kind.key: kind for kind in work_queue(user)}


def _labels(kind) -> list[str]:  # noqa: ANN001
    return [item.label for item in kind.items]


@pytest.fixture
def waiting_world(make_member, alice, provider, bob, dataset, ingest, dua, tiny_threshold, admin_user):
    """One of each decision waiting, next to one of each already decided."""
    _, new_provider = make_member("nina", "Nine Scans", "provider", approved=False)
    _, refused_provider = make_member("ron", "Refused Radiology", "provider", approved=False)
    organization_provider_reject(organization=refused_provider, acting_user=admin_user, reason="No licence to share")
    _, new_buyer = make_member("gina", "Golf Research", "buyer", approved=False)
    _, refused_buyer = make_member("hank", "Hotel Analytics", "buyer", approved=False)
    organization_buyer_reject(organization=refused_buyer, acting_user=admin_user, reason="No contact")

    ingest(dataset, ct_files())
    dataset_submit_for_review(dataset=dataset, acting_user=alice)
    published = dataset_create(provider=provider, acting_user=alice, title="Already published", price_per_study=5)
    ingest(published, ct_files(seed=3))
    dataset_submit_for_review(dataset=published, acting_user=alice)
    published = dataset_publish(dataset=published, acting_user=admin_user)

    waiting_order = place_order(bob, published, dua, payment_method=Order.PaymentMethod.INVOICE)
    held = place_order(bob, published, dua, payment_method=Order.PaymentMethod.INVOICE)
    order_move(order=held, field="payment_status", to=Order.PaymentStatus.FLAGGED, reason="amount did not match")
    decided_order = approve_for_delivery(place_order(bob, published, dua, payment_method=Order.PaymentMethod.INVOICE),
                                         admin_user)
    Order.objects.filter(pk=held.pk).update(flag_reason="amount did not match")
    return {"new_provider": new_provider, "refused_provider": refused_provider, "new_buyer": new_buyer,
            "refused_buyer": refused_buyer, "dataset": dataset, "published": published,
            "waiting_order": waiting_order, "decided_order": decided_order, "held": held}


def test_each_kind_lists_what_waits_and_nothing_decided(waiting_world, admin_user, provider):
    w = waiting_world
    queue = _queue(admin_user)
    assert list(queue) == ["providers", "datasets", "contracts", "credit", "payments", "buyers"]

    assert _labels(queue["providers"]) == ["Nine Scans"]  # not the approved Alpha, not the refused one
    assert queue["providers"].count == 1
    assert queue["providers"].items[0].reject_url == reverse("admin:marketplace_organization_reject",
                                                             args=[w["new_provider"].pk])
    assert _labels(queue["buyers"]) == ["Golf Research"]

    assert _labels(queue["datasets"]) == ["Chest CT screening"]  # not the published one
    assert queue["datasets"].items[0].url == reverse("admin:catalog_dataset_change", args=[w["dataset"].pk])
    assert "Alpha Imaging" in queue["datasets"].items[0].detail

    # Three orders were placed; one contract was approved and signed.
    contract_orders = {item.label for item in queue["contracts"].items}
    assert contract_orders == {f"Order #{w['waiting_order'].pk}", f"Order #{w['held'].pk}"}
    assert queue["contracts"].items[0].action_url == reverse("admin:orders_contract_approve",
                                                             args=[w["waiting_order"].contract.pk])
    # Credit terms: the unpaid invoiced order; not the approved one, not the held payment.
    assert _labels(queue["credit"]) == [f"Order #{w['waiting_order'].pk}"]
    assert _labels(queue["payments"]) == [f"Order #{w['held'].pk}"]
    assert "amount did not match" in queue["payments"].items[0].detail


def test_items_come_oldest_first_and_the_count_covers_more_than_the_page(make_member, admin_user):
    orgs = [make_member(f"p{i}", f"Provider {i:02}", "provider", approved=False)[1]
            for i in range(ITEMS_PER_KIND + 2)]
    now = timezone.now()
    for i, org in enumerate(orgs):  # Provider 00 waits longest
        Organization.objects.filter(pk=org.pk).update(created=now - timedelta(days=30 - i))
    kind = _queue(admin_user)["providers"]
    assert kind.count == ITEMS_PER_KIND + 2 and kind.more == 2
    assert _labels(kind) == [f"Provider {i:02}" for i in range(ITEMS_PER_KIND)]
    assert kind.oldest == Organization.objects.get(name="Provider 00").created


def test_a_resubmitted_dataset_waits_from_its_submission(waiting_world, admin_user, alice):
    from catalog.datasets.services import dataset_reject

    dataset = waiting_world["dataset"]
    dataset_reject(dataset=dataset, acting_user=admin_user, reason="Add the series descriptions")
    assert _queue(admin_user)["datasets"].count == 0
    before = timezone.now()
    dataset_submit_for_review(dataset=dataset, acting_user=alice)
    kind = _queue(admin_user)["datasets"]
    assert kind.count == 1 and kind.oldest >= before


def test_one_query_per_kind(waiting_world, admin_user):
    work_queue(admin_user)  # permissions cached
    with CaptureQueriesContext(connection) as queries:
        kinds = work_queue(admin_user)
        [item.detail for kind in kinds for item in kind.items]
    assert len(queries) == len(kinds)


def test_staff_see_only_the_kinds_they_may_change(waiting_world, make_member):
    from django.contrib.auth.models import Permission

    clerk, _ = make_member("clerk", "Clerk Org", "buyer")
    clerk.is_staff = True
    clerk.save()
    clerk.user_permissions.add(Permission.objects.get(codename="change_dataset", content_type__app_label="catalog"))
    clerk = type(clerk).objects.get(pk=clerk.pk)
    assert list(_queue(clerk)) == ["datasets"]
    clerk.is_staff = False
    assert work_queue(clerk) == []


def test_the_admin_index_shows_the_queue_to_staff_only(waiting_world, admin_client, client, bob):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="work-queue"' in page and "Datasets submitted for review" in page
    assert reverse("admin:catalog_dataset_change", args=[waiting_world["dataset"].pk]) in page
    assert reverse("admin:catalog_dataset_reject", args=[waiting_world["dataset"].pk]) in page
    assert "status__exact=in_review" in page  # the filtered list
    assert "Oldest waiting" in page
    # The changelist links filter to what waits.
    listed = admin_client.get(reverse("admin:marketplace_organization_changelist") + "?standing=provider_waiting")
    assert "Nine Scans" in listed.content.decode() and "Refused Radiology" not in listed.content.decode()
    credit = admin_client.get(reverse("admin:orders_order_changelist")
                              + "?payment_method__exact=invoice&credit_approved_at__isnull=True&status__exact=open")
    assert credit.status_code == 200 and f">{waiting_world['waiting_order'].pk}<" in credit.content.decode()

    client.force_login(bob)  # not staff: the admin's login page, never the queue
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302 and "work-queue" not in response.content.decode()
    client.logout()
    assert client.get(reverse("admin:index")).status_code == 302


def test_contracts_waiting_for_provider_consent_are_not_the_admins_yet(waiting_world, admin_user):
    from orders.models import OrderLine

    order = waiting_world["waiting_order"]
    OrderLine.objects.filter(order=order).update(consent_status=OrderLine.ConsentStatus.PENDING)
    assert f"Order #{order.pk}" not in _labels(_queue(admin_user)["contracts"])
    assert f"Order #{waiting_world['held'].pk}" in _labels(_queue(admin_user)["contracts"])
