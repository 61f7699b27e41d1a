"""Card payments with Stripe PaymentIntents, confirmed on the server.

The browser collects the card with Stripe.js (a SetupIntent gives a PaymentMethod; the
card number never reaches us), then we create and confirm a PaymentIntent for exactly
the order's total. The order becomes paid only from Stripe's signed webhook
(orders/webhooks.py), never from the browser's word."""
from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import transaction

from marketplace.models import User
from marketplace.services import audit_record
from orders import stripe_gateway
from orders.exceptions import OrderError
from orders.models import Order, Payment
from orders.transitions import can_move, order_move

P = Order.PaymentStatus
PAYMENT_METHOD_ID = re.compile(r"^pm_[A-Za-z0-9_]{1,80}$")


@dataclass(frozen=True)
class PaymentStep:
    """What the browser does next: nothing (wait for the webhook), or authenticate the
    card (3-D Secure) with the intent's client secret."""

    status: str
    client_secret: str = ""
    message: str = ""


def _payable(order: Order) -> None:
    if order.payment_method != Order.PaymentMethod.CARD:
        raise OrderError("This order is not paid by card.", code="not_card")
    if order.status != Order.Status.OPEN:
        raise OrderError(f"Order #{order.pk} is {order.get_status_display().lower()}.", code="order_closed")
    if order.payment_status not in (P.UNPAID, P.FAILED):
        raise OrderError(f"Order #{order.pk}: {order.get_payment_status_display().lower()}; it is not charged again.",
                         code="already_paying")


def card_setup(*, order: Order, buyer: User) -> str:
    """A SetupIntent's client secret for the card form (one per order and page view is
    fine: nothing is charged by it)."""
    _payable(order)
    intent = stripe_gateway.create_setup_intent(
        idempotency_key=f"order-{order.pk}-setup-{order.payments.count()}-{buyer.pk}",
        metadata={"order_id": str(order.pk)})
    return intent.client_secret


def card_pay(*, order: Order, buyer: User, payment_method: str, ip: str | None = None) -> PaymentStep:
    """Charge the order's total to this card once. The same card submitted twice (a double
    click, a retried request) reuses one idempotency key, so Stripe charges once; while a
    payment is processing or done no other card is charged."""
    if not PAYMENT_METHOD_ID.match(payment_method or ""):
        raise OrderError("The card form sent no usable payment method; reload the page and try again.",
                         code="payment_method_missing")
    key = f"order-{order.pk}-pay-{payment_method}"
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        existing = Payment.objects.filter(idempotency_key=key).first()
        if existing is None:
            _payable(locked)
            existing = Payment.objects.create(order=locked, amount_minor=locked.total_minor, currency=locked.currency,
                                              idempotency_key=key)
            order_move(order=locked, field="payment_status", to=P.PROCESSING, acting_user=buyer,
                       reason="Card payment submitted")
            audit_record(actor=buyer, action="payment.start", obj=locked, ip=ip,
                         detail={"amount_minor": locked.total_minor, "currency": locked.currency})
    # Outside the row lock: Stripe answers in its own time. The key makes a repeat safe.
    try:
        intent = stripe_gateway.create_payment_intent(
            amount_minor=existing.amount_minor, currency=existing.currency.lower(), payment_method=payment_method,
            metadata={"order_id": str(order.pk), "payment_id": str(existing.pk)},
            transfer_group=order.transfer_group, idempotency_key=key)
    except stripe_gateway.PaymentGatewayError as exc:
        _payment_failed(existing, message=exc.message)
        raise OrderError(exc.message, code=exc.code) from exc
    with transaction.atomic():
        Payment.objects.filter(pk=existing.pk, stripe_payment_intent__isnull=True).update(
            stripe_payment_intent=intent.id)
    if intent.status == "requires_action":
        return PaymentStep(status="requires_action", client_secret=intent.client_secret,
                           message="Your bank asks you to confirm this payment.")
    if intent.status == "requires_payment_method":
        _payment_failed(existing, message="The card was declined.")
        raise OrderError("The card was declined; try another card.", code="card_declined")
    return PaymentStep(status="processing", message="Payment received by Stripe; waiting for its confirmation.")


@transaction.atomic
def _payment_failed(payment: Payment, *, message: str) -> None:
    locked = Payment.objects.select_for_update().get(pk=payment.pk)
    if locked.status != Payment.Status.PROCESSING:
        return
    locked.status, locked.error = Payment.Status.FAILED, message[:300]
    locked.save(update_fields=["status", "error"])
    order = Order.objects.select_for_update().get(pk=locked.order_id)
    if can_move(order, "payment_status", P.FAILED):
        order_move(order=order, field="payment_status", to=P.FAILED, reason=message)
