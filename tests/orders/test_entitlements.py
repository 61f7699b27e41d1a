"""Entitlements: a subscription line's access ends with its licence term (reminded 30 and
7 days before), an admin may revoke a line at once, and the buyer renews at today's terms.
Time is moved by passing ``now=`` to the sweeps."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.datasets.services import dataset_update
from factories.orders import approve_for_delivery, place_order
from marketplace.exceptions import NotFoundError, PermissionDeniedError
from marketplace.grants import who_may
from marketplace.models import AuditEvent
from orders.cart import cart_items, cart_quote
from orders.entitlements import (
    LICENCE_ENDED,
    entitlement_renew,
    entitlement_revoke,
    entitlements_expire,
    entitlements_remind,
)
from orders.exceptions import OrderError
from orders.models import EntitlementReminder, Order, OrderLine
from workspaces.models import Delivery
from workspaces.services import MANIFEST_NAME, delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

LINK = re.compile(r'<a href="(/workspace/download/[^"/]+/)">([^<]+)</a>')


@pytest.fixture
def subscription_dataset(published_dataset, alice):
    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="subscription",
                   price=Decimal("100.00"))
    published_dataset.refresh_from_db()
    return published_dataset


def deliver(order, admin_user) -> Order:  # noqa: ANN001
    order = approve_for_delivery(order, admin_user)
    delivery = delivery_run(delivery_id=Delivery.objects.get(order=order).pk)
    assert delivery.status == Delivery.Status.DONE
    order.refresh_from_db()
    return order


@pytest.fixture
def subscription_order(subscription_dataset, bob, admin_user, dua) -> Order:
    """Bob's yearly subscription to the whole dataset, delivered into his workspace."""
    return deliver(place_order(bob, subscription_dataset, dua), admin_user)


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


def workspace_links(client) -> dict[str, str]:  # noqa: ANN001
    response = client.get(reverse("workspace"))
    assert response.status_code == 200
    return {path: url for url, path in LINK.findall(response.content.decode())}


def audits(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def test_a_subscription_is_reminded_twice_then_ends_and_its_links_die(subscription_order, bob, bob_client,
                                                                      django_capture_on_commit_callbacks):
    order = subscription_order
    line = order.lines.get()
    assert line.pricing_model == "subscription" and line.amount_minor == 10000
    assert abs(line.licence_ends - (order.created + timedelta(days=365))) < timedelta(seconds=5)
    ends = line.licence_ends
    links = workspace_links(bob_client)
    assert len(links) == 9  # six files, the manifest and the certificate (JSON and PDF)
    assert bob_client.get(next(url for path, url in links.items() if path != MANIFEST_NAME)).status_code == 200

    def remind(now):  # noqa: ANN001, ANN202
        with django_capture_on_commit_callbacks(execute=True):
            return entitlements_remind(now=now)

    assert remind(ends - timedelta(days=40)) == {"30_days": 0, "7_days": 0}
    assert remind(ends - timedelta(days=30) + timedelta(hours=1)) == {"30_days": 1, "7_days": 0}
    assert remind(ends - timedelta(days=30) + timedelta(hours=2)) == {"30_days": 0, "7_days": 0}
    assert remind(ends - timedelta(days=20)) == {"30_days": 0, "7_days": 0}
    assert remind(ends - timedelta(days=7) + timedelta(hours=1)) == {"30_days": 0, "7_days": 1}
    assert remind(ends - timedelta(days=1)) == {"30_days": 0, "7_days": 0}
    notices = list(bob.notifications.filter(message__contains="ends on").order_by("pk"))
    assert len(notices) == 2
    assert "(in 29 days)" in notices[0].message and "(in 6 days)" in notices[1].message
    assert all(n.url.endswith(f"/orders/{order.pk}/") and "Renew" in n.message for n in notices)
    assert sorted(EntitlementReminder.objects.filter(line=line).values_list("days_before", flat=True)) == [7, 30]
    assert audits("entitlement.remind") == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert entitlements_expire(now=ends - timedelta(seconds=1))["expired"] == 0
        first = entitlements_expire(now=ends + timedelta(hours=3))
    assert first == {"expired": 1, "files_removed": 6, "orders_stopped": 1, "more": False}
    line.refresh_from_db()
    order.refresh_from_db()
    assert line.access_end_reason == LICENCE_ENDED and line.access_ended_at == ends + timedelta(hours=3)
    assert order.fulfilment_status == Order.FulfilmentStatus.STOPPED
    assert order.status_changes.filter(field="fulfilment_status", new_status="stopped").count() == 1
    # Every link dies, the manifest's too: the grants on the delivery are gone.
    for path, url in links.items():
        assert bob_client.get(url).status_code == 404, path
    assert workspace_links(bob_client) == {}
    assert who_may(order.delivery) == {}
    assert bob_client.get(reverse("delivery_files", args=[order.delivery.pk])).status_code == 404
    ended = bob.notifications.get(message__contains="ended on")
    assert "Chest CT screening" in ended.message and ended.url.endswith(f"/orders/{order.pk}/")
    event = AuditEvent.objects.get(action="entitlement.expire")
    assert event.actor is None and event.object_id == str(line.pk) and event.detail["files_removed"] == 6

    # A second run, and the reminders after the end, change and send nothing.
    before = (bob.notifications.count(), AuditEvent.objects.count())
    with django_capture_on_commit_callbacks(execute=True):
        assert entitlements_expire(now=ends + timedelta(days=1)) == {
            "expired": 0, "files_removed": 0, "orders_stopped": 0, "more": False}
        assert remind(ends + timedelta(days=1)) == {"30_days": 0, "7_days": 0}
    assert (bob.notifications.count(), AuditEvent.objects.count()) == before
    line.refresh_from_db()
    assert line.access_ended_at == ends + timedelta(hours=3)

    page = bob_client.get(reverse("order_detail", args=[order.pk])).content.decode()
    words = re.sub(r"<[^>]+>", "", page)  # the date is a <time> element
    assert f"Ended {timezone.localtime(line.access_ended_at):%-d %b %Y} — {LICENCE_ENDED}" in words
    assert reverse("line_renew", args=[order.pk, line.pk]) in page


def test_a_late_sweep_sends_only_the_nearest_reminder(subscription_order, bob, django_capture_on_commit_callbacks):
    ends = subscription_order.lines.get().licence_ends
    with django_capture_on_commit_callbacks(execute=True):
        assert entitlements_remind(now=ends - timedelta(days=5)) == {"30_days": 0, "7_days": 1}
        assert entitlements_remind(now=ends - timedelta(days=4)) == {"30_days": 0, "7_days": 0}
    assert bob.notifications.filter(message__contains="ends on").count() == 1


def test_orders_not_delivered_are_not_reminded(subscription_dataset, bob, dua):
    order = place_order(bob, subscription_dataset, dua)
    ends = order.lines.get().licence_ends
    assert entitlements_remind(now=ends - timedelta(days=6)) == {"30_days": 0, "7_days": 0}


def test_perpetual_lines_are_untouched(subscription_dataset, second_provider_dataset, bob, admin_user, dua,
                                       bob_client):
    order = deliver(place_order(bob, [subscription_dataset, second_provider_dataset], dua), admin_user)
    perpetual = order.lines.get(dataset=second_provider_dataset)
    subscription = order.lines.get(dataset=subscription_dataset)
    assert perpetual.licence_ends is None and subscription.licence_ends is not None
    assert order.delivery.files.count() == 12
    later = timezone.now() + timedelta(days=3650)
    assert entitlements_remind(now=subscription.licence_ends - timedelta(days=3))["7_days"] == 1
    assert entitlements_expire(now=later)["expired"] == 1
    perpetual.refresh_from_db()
    order.refresh_from_db()
    assert perpetual.has_access and not perpetual.reminders.exists()
    assert order.delivery.files.count() == 6
    assert {f.instance.series.study.dataset_id for f in order.delivery.files.all()} == {second_provider_dataset.pk}
    assert order.fulfilment_status == Order.FulfilmentStatus.FULFILLED  # one line still has access
    assert len(workspace_links(bob_client)) == 9  # six files, manifest, certificate JSON and PDF
    page = bob_client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert "Perpetual" in page and reverse("line_renew", args=[order.pk, perpetual.pk]) not in page


def test_an_admin_revokes_a_line_mid_term_and_both_sides_are_told(subscription_order, bob, alice, charlie,
                                                                   admin_user, bob_client,
                                                                   django_capture_on_commit_callbacks):
    order, line = subscription_order, subscription_order.lines.get()
    links = workspace_links(bob_client)
    with pytest.raises(OrderError, match="Give a reason"):
        entitlement_revoke(line, admin_user, "  ")
    with pytest.raises(PermissionDeniedError):
        entitlement_revoke(line, charlie, "Breach")
    line.refresh_from_db()
    assert line.has_access and order.delivery.files.count() == 6

    with django_capture_on_commit_callbacks(execute=True):
        entitlement_revoke(line, admin_user, "Takedown requested by the provider", ip="10.0.0.9")
    line.refresh_from_db()
    order.refresh_from_db()
    assert line.access_end_reason == "Revoked: Takedown requested by the provider"
    assert line.access_ended_at < line.licence_ends
    assert order.delivery.files.count() == 0
    assert order.fulfilment_status == Order.FulfilmentStatus.STOPPED
    assert all(bob_client.get(url).status_code == 404 for url in links.values())
    removed = AuditEvent.objects.filter(action="grant.remove", object_id=str(order.delivery.pk))
    assert {e.detail["perms"][0] for e in removed} == {"workspaces.view_delivery", "workspaces.download_delivery"}
    assert all(e.actor == admin_user and "Takedown" in e.detail["reason"] for e in removed)
    assert "Takedown requested" in bob.notifications.get(message__contains="revoked").message
    provider_notice = alice.notifications.get(message__contains="revoked")
    assert f"order #{order.pk}" in provider_notice.message and provider_notice.url.endswith("/provider/")
    event = AuditEvent.objects.get(action="entitlement.revoke")
    assert event.actor == admin_user and event.ip_address == "10.0.0.9" and event.detail["files_removed"] == 6

    with pytest.raises(OrderError, match="already ended"):
        entitlement_revoke(line, admin_user, "Again")
    assert audits("entitlement.revoke") == 1
    # The term's end later changes nothing; a revoked line is not renewed.
    assert entitlements_expire(now=line.licence_ends + timedelta(days=1))["expired"] == 0
    with pytest.raises(OrderError, match="can be renewed"):
        entitlement_renew(bob, line)


def test_the_admin_action_revokes_only_with_a_reason(subscription_order, admin_client):
    line = subscription_order.lines.get()
    url = reverse("admin:orders_orderline_changelist")
    response = admin_client.post(url, {"action": "revoke_access", "_selected_action": [line.pk], "reason": ""},
                                 follow=True)
    assert "Give a reason for revoking access." in response.content.decode()
    line.refresh_from_db()
    assert line.has_access
    response = admin_client.post(url, {"action": "revoke_access", "_selected_action": [line.pk],
                                       "reason": "Breach of the agreement"}, follow=True)
    assert "Access revoked: 1." in response.content.decode()
    line.refresh_from_db()
    assert line.access_end_reason == "Revoked: Breach of the agreement"


def test_renewing_puts_the_dataset_in_the_cart_at_the_current_price(subscription_order, subscription_dataset, bob,
                                                                    charlie, alice, bob_client, client):
    order, line = subscription_order, subscription_order.lines.get()
    renew_url = reverse("line_renew", args=[order.pk, line.pk])
    assert renew_url not in bob_client.get(reverse("order_detail", args=[order.pk])).content.decode()
    with pytest.raises(OrderError, match="can be renewed"):
        entitlement_renew(bob, line)  # eleven months early

    # A year on: the line ends in ten days and the provider has raised its price.
    OrderLine.objects.filter(pk=line.pk).update(licence_ends=timezone.now() + timedelta(days=10))
    dataset_update(dataset=subscription_dataset, acting_user=alice, price=Decimal("150.00"))
    line.refresh_from_db()
    with pytest.raises(NotFoundError):
        entitlement_renew(charlie, line)
    client.force_login(charlie)
    assert client.post(renew_url).status_code == 404
    assert not cart_items(charlie)

    bob_client.force_login(bob)
    page = bob_client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert renew_url in page and "Access until" in page
    assert bob_client.get(renew_url).status_code == 405  # POST only
    response = bob_client.post(renew_url)
    assert response.status_code == 302 and response["Location"] == reverse("cart")
    [item] = cart_items(bob)
    assert item.dataset_id == subscription_dataset.pk and item.criteria == line.criteria and item.include_held
    quote = cart_quote(buyer=bob)
    assert not quote.problems and quote.total_minor == 15000  # today's price, not the 10000 paid
    assert audits("entitlement.renew") == 1


def test_an_expired_line_can_be_renewed(subscription_order, bob):
    line = subscription_order.lines.get()
    entitlements_expire(now=line.licence_ends + timedelta(days=40))
    line.refresh_from_db()
    entitlement_renew(bob, line)
    assert cart_quote(buyer=bob).total_minor == 10000


def test_ending_every_line_before_the_copy_ran_stops_the_delivery(subscription_dataset, bob, admin_user, dua):
    order = approve_for_delivery(place_order(bob, subscription_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    assert delivery.status == Delivery.Status.QUEUED
    result = entitlements_expire(now=order.lines.get().licence_ends + timedelta(minutes=1))
    assert result["expired"] == 1 and result["orders_stopped"] == 1
    delivery.refresh_from_db()
    order.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED and order.fulfilment_status == Order.FulfilmentStatus.STOPPED
    assert delivery_run(delivery_id=delivery.pk) is None
    assert not delivery.files.exists()


def test_a_sweep_over_its_time_budget_leaves_the_rest_for_the_next(subscription_dataset, bob, charlie, admin_user,
                                                                   dua):
    orders = [deliver(place_order(buyer, subscription_dataset, dua), admin_user) for buyer in (bob, charlie)]
    later = max(o.lines.get().licence_ends for o in orders) + timedelta(hours=1)
    assert entitlements_expire(now=later, budget_seconds=0) == {
        "expired": 1, "files_removed": 6, "orders_stopped": 1, "more": True}
    assert entitlements_expire(now=later, budget_seconds=0)["more"] is False
    assert not OrderLine.objects.filter(access_ended_at__isnull=True).exists()


def test_beat_runs_the_sweeps_daily_on_the_housekeeping_queue(settings):
    from celery.schedules import crontab

    from config.celery import queue_of
    from orders.tasks import entitlements_expire_task, entitlements_remind_task

    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    for task in (entitlements_expire_task, entitlements_remind_task):
        entry = schedule[task.name]
        assert isinstance(entry["schedule"], crontab) and entry["schedule"].hour == {2}
        assert entry["options"]["queue"] == "housekeeping" and entry["options"]["expires"] > 0
        assert queue_of(task.name, settings.CELERY_TASK_ROUTES, settings.CELERY_TASK_DEFAULT_QUEUE) == "housekeeping"
    assert set(schedule) >= {"orders.tasks.entitlements_expire_task", "orders.tasks.entitlements_remind_task"}
