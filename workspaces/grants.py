"""Grants on deliveries: the buyer may see a delivery (view) and fetch its files (download).

A view-only licence gives view without download. When access ends (term over, revoked,
refunded, cancelled) every grant on the delivery is taken back, so the pages and links
that check them stop at once.
"""
from __future__ import annotations

from django.db.models import QuerySet

from marketplace.grants import grant, grants_remove_all, objects_granted
from marketplace.models import User
from orders.models import Order
from workspaces.models import Delivery

DELIVERY_VIEW = "workspaces.view_delivery"
DELIVERY_DOWNLOAD = "workspaces.download_delivery"
ALL_PERMS = [DELIVERY_VIEW, DELIVERY_DOWNLOAD]


def delivery_grant_buyer(delivery: Delivery, *, view_only: bool = False, acting_user: User | None = None) -> None:
    perms = [DELIVERY_VIEW] if view_only else ALL_PERMS
    grant(perms, delivery, to=delivery.user, acting_user=acting_user)


def delivery_grants_end(*, order: Order, reason: str, acting_user: User | None = None) -> int:
    """Take back every grant on the order's delivery; returns how many went (0 if none)."""
    delivery = Delivery.objects.filter(order=order).first()
    if delivery is None:
        return 0
    return grants_remove_all(delivery, ALL_PERMS, acting_user=acting_user, reason=reason)


def deliveries_visible_to(user: User) -> QuerySet[Delivery]:
    return objects_granted(user, DELIVERY_VIEW, Delivery.objects.all())


def deliveries_downloadable_by(user: User) -> QuerySet[Delivery]:
    return objects_granted(user, DELIVERY_DOWNLOAD, Delivery.objects.all())
