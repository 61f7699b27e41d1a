"""Order reads and the permission-checking fetch."""
from __future__ import annotations

from decimal import Decimal

from django.db.models import QuerySet, Sum

from marketplace.exceptions import NotFoundError
from marketplace.models import User
from orders.models import DuaTemplate, Order


def orders_for_buyer(*, user: User) -> QuerySet[Order]:
    return Order.objects.filter(buyer=user).select_related("dataset__provider", "contract", "delivery")


def access_order(*, user: User, order_id: int) -> Order:
    """The buyer's own order; the same NotFoundError for missing and for someone else's."""
    order = (
        orders_for_buyer(user=user).filter(pk=order_id).first() if user.is_authenticated else None
    )
    if order is None:
        raise NotFoundError("Order not found.")
    return order


def active_dua_template() -> DuaTemplate | None:
    return DuaTemplate.objects.filter(is_active=True).order_by("-created").first()


def sales_for_provider_user(*, user: User) -> QuerySet[Order]:
    return Order.objects.filter(dataset__provider__memberships__user=user).select_related("dataset").distinct()


def revenue_for_provider_user(*, user: User) -> list[tuple[str, Decimal]]:
    """(currency, total) of the approved and delivered sales of the user's organizations."""
    sold = Order.objects.filter(
        dataset__provider__memberships__user=user,
        status__in=[Order.Status.APPROVED, Order.Status.DELIVERING, Order.Status.DELIVERED],
    ).distinct()
    return list(Order.objects.filter(pk__in=sold.values("pk")).values_list("currency")
                .annotate(total=Sum("total")).order_by("currency"))
