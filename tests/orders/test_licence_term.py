"""A line's licence term comes from its licence terms and starts when access is granted
(the order's release), not when it was placed; perpetual terms never end; a subscription
ends at the shorter of its year and its terms."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from dateutil.relativedelta import relativedelta
from django.utils import timezone

from catalog.datasets.services import dataset_update
from factories.orders import approve_for_delivery, place_order
from orders.entitlements import LICENCE_ENDED, entitlements_expire, line_renewable
from orders.models import Order, OrderStatusChange

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def released_at(order: Order):  # noqa: ANN201
    return OrderStatusChange.objects.get(order=order, field="fulfilment_status", new_status="fulfilling").created


def with_terms(dataset, alice, **terms):  # noqa: ANN001, ANN003, ANN201
    dataset_update(dataset=dataset, acting_user=alice, licence_terms={"use": "research", "seats": None, **terms})
    dataset.refresh_from_db()
    return dataset


def test_a_six_month_licence_starts_at_release_and_ends_six_months_later(published_dataset, alice, bob, admin_user,
                                                                         dua) -> None:
    with_terms(published_dataset, alice, term_months=6)
    order = place_order(bob, published_dataset, dua)
    line = order.lines.get()
    assert line.licence_terms["term_months"] == 6
    assert line.licence_ends is None  # no access yet: nothing runs
    order = approve_for_delivery(order, admin_user)
    line.refresh_from_db()
    start = released_at(order)
    assert abs(line.licence_ends - (start + relativedelta(months=6))) < timedelta(seconds=5)
    assert line.licence_ends > timezone.now() + timedelta(days=180)
    assert not line_renewable(line)
    assert line_renewable(line, now=line.licence_ends - timedelta(days=10))

    assert entitlements_expire(now=line.licence_ends - timedelta(minutes=1))["expired"] == 0
    assert entitlements_expire(now=line.licence_ends + timedelta(hours=1))["expired"] == 1
    line.refresh_from_db()
    assert line.access_end_reason == LICENCE_ENDED


def test_a_perpetual_licence_never_ends(published_dataset, alice, bob, admin_user, dua) -> None:
    with_terms(published_dataset, alice, term_months=None)
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    line = order.lines.get()
    assert line.licence_ends is None
    assert entitlements_expire(now=timezone.now() + timedelta(days=3650))["expired"] == 0


def test_the_terms_at_checkout_count_not_a_later_change(published_dataset, alice, bob, admin_user, dua) -> None:
    with_terms(published_dataset, alice, term_months=3)
    order = place_order(bob, published_dataset, dua)
    with_terms(published_dataset, alice, term_months=None)
    order = approve_for_delivery(order, admin_user)
    line = order.lines.get()
    assert abs(line.licence_ends - (released_at(order) + relativedelta(months=3))) < timedelta(seconds=5)


@pytest.mark.parametrize(("months", "expected"), [
    (24, timedelta(days=365)),  # the subscription's year is shorter
    (6, None),  # the terms are shorter: six calendar months
])
def test_a_subscription_ends_at_the_shorter_of_its_year_and_its_terms(published_dataset, alice, bob, admin_user, dua,
                                                                      months, expected) -> None:
    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="subscription",
                   price=Decimal("100.00"))
    with_terms(published_dataset, alice, term_months=months)
    order = place_order(bob, published_dataset, dua)
    assert order.lines.get().licence_ends is not None  # provisional, from the checkout
    order = approve_for_delivery(order, admin_user)
    line = order.lines.get()
    start = released_at(order)
    wanted = start + (expected if expected is not None else relativedelta(months=months))
    assert abs(line.licence_ends - wanted) < timedelta(seconds=5)
