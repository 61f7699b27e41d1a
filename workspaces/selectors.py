"""Workspace reads: a user's deliveries and their files."""
from __future__ import annotations

from django.db.models import QuerySet

from marketplace.exceptions import NotFoundError
from marketplace.models import User
from workspaces.grants import deliveries_visible_to
from workspaces.models import Delivery


def deliveries_for_user(*, user: User) -> QuerySet[Delivery]:
    if not user.is_authenticated:
        return Delivery.objects.none()
    # The grant, not the delivery's user column: access ends when the grant is taken back.
    return deliveries_visible_to(user).select_related("order").prefetch_related("order__lines__dataset")


def access_delivery(*, user: User, delivery_id: int) -> Delivery:
    """The user's own delivery; the same NotFoundError for missing and for someone else's."""
    delivery = deliveries_for_user(user=user).filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFoundError("Delivery not found.")
    return delivery
