"""The three state machines of an order and the one service that moves each of them.

An order's own status, its payment status and its fulfilment status are separate fields;
each may move only along its table, under a row lock, with a history row per move."""
from __future__ import annotations

from django.db import transaction

from marketplace.exceptions import InvalidTransitionError
from marketplace.models import User
from orders.models import Order, OrderStatusChange

S, P, F = Order.Status, Order.PaymentStatus, Order.FulfilmentStatus

STATUS_TRANSITIONS = {
    S.OPEN: {S.COMPLETED, S.CANCELLED},
    # A completed order is cancelled only when it is refunded in full (its access ends).
    S.COMPLETED: {S.CANCELLED},
    S.CANCELLED: set(),
}

PAYMENT_TRANSITIONS = {
    P.NOT_REQUIRED: set(),
    P.UNPAID: {P.PROCESSING, P.PAID, P.FLAGGED, P.VOID},
    P.PROCESSING: {P.PAID, P.FAILED, P.FLAGGED, P.VOID},
    P.FAILED: {P.PROCESSING, P.PAID, P.FLAGGED, P.VOID},
    P.PAID: {P.PARTIALLY_REFUNDED, P.REFUNDED},
    P.PARTIALLY_REFUNDED: {P.REFUNDED},
    # Held: an admin looks at the money that did not match and refunds or accepts it.
    P.FLAGGED: {P.PAID, P.REFUNDED, P.VOID},
    P.REFUNDED: set(),
    P.VOID: set(),
}

FULFILMENT_TRANSITIONS = {
    F.UNFULFILLED: {F.FULFILLING, F.STOPPED},
    F.FULFILLING: {F.FULFILLED, F.STOPPED},
    F.FULFILLED: {F.STOPPED},
    F.STOPPED: set(),
}

TABLES = {
    OrderStatusChange.Field.STATUS: (STATUS_TRANSITIONS, S),
    OrderStatusChange.Field.PAYMENT: (PAYMENT_TRANSITIONS, P),
    OrderStatusChange.Field.FULFILMENT: (FULFILMENT_TRANSITIONS, F),
}


def can_move(order: Order, field: str, to: str) -> bool:
    table, _ = TABLES[field]
    return to in table[getattr(order, field)]


@transaction.atomic
def order_move(*, order: Order, field: str, to: str, acting_user: User | None = None, reason: str = "") -> Order:
    """Move one of the order's statuses. Quiet when it is already there (a replayed event
    or a second click changes nothing); refused along an edge its table lacks."""
    table, labels = TABLES[field]
    locked = Order.objects.select_for_update().get(pk=order.pk)
    old = getattr(locked, field)
    if old == to:
        return locked
    if to not in table[old]:
        what = OrderStatusChange.Field(field).label.lower()
        raise InvalidTransitionError(
            f"Order #{locked.pk}: the {what} status cannot move from {labels(old).label} to {labels(to).label}.")
    setattr(locked, field, to)
    locked.save(update_fields=[field])
    OrderStatusChange.objects.create(order=locked, field=field, old_status=old, new_status=to,
                                     acting_user=acting_user, reason=reason[:2000])
    return locked
