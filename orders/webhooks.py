"""Stripe webhook events: stored once, then handled.

Each event is saved under its unique id before anything else (a replay finds it and
changes nothing twice), then handed to the handler for its type; the outcome (succeeded,
failed with the error, ignored) stays on the row. Handlers are idempotent and do not
assume any order of arrival: each checks the state it would change."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from marketplace.services import audit_record
from orders.models import Invoice, Order, Payment, StripeEvent
from orders.transitions import can_move, order_move

logger = logging.getLogger(__name__)
P = Order.PaymentStatus


def event_store(event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """(row, created). The unique event id makes a second delivery a no-op."""
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(event_id=event["id"], type=event.get("type", ""), payload=event), True
    except IntegrityError:
        return StripeEvent.objects.get(event_id=event["id"]), False


def event_process(stored: StripeEvent) -> StripeEvent:
    """Run the handler unless it already succeeded (or was ignored). A failure is kept
    with its error and raised again on the next delivery of the same event."""
    with transaction.atomic():
        row = StripeEvent.objects.select_for_update().get(pk=stored.pk)
        if row.status in (StripeEvent.Status.SUCCEEDED, StripeEvent.Status.IGNORED):
            return row
        handler = HANDLERS.get(row.type)
        row.attempts += 1
        if handler is None:
            row.status, row.processed = StripeEvent.Status.IGNORED, timezone.now()
            row.save(update_fields=["status", "processed", "attempts"])
            return row
        row.status = StripeEvent.Status.STARTED
        row.save(update_fields=["status", "attempts"])
    try:
        with transaction.atomic():
            handler(row.payload["data"]["object"])
    except Exception as exc:  # kept on the row for an admin; Stripe retries the delivery
        StripeEvent.objects.filter(pk=row.pk).update(status=StripeEvent.Status.FAILED,
                                                     error=f"{type(exc).__name__}: {exc}"[:2000])
        logger.exception("stripe event %s (%s) failed", row.event_id, row.type)
        raise
    StripeEvent.objects.filter(pk=row.pk).update(status=StripeEvent.Status.SUCCEEDED, error="",
                                                 processed=timezone.now())
    row.refresh_from_db()
    return row


def _order_for_intent(intent: dict[str, Any]) -> tuple[Order | None, Payment | None]:
    payment = Payment.objects.filter(stripe_payment_intent=intent["id"]).first()
    if payment is None:
        # The webhook can arrive before our request saved the intent's id.
        payment_id = (intent.get("metadata") or {}).get("payment_id", "")
        payment = Payment.objects.filter(pk=int(payment_id)).first() if str(payment_id).isdigit() else None
        if payment is not None and not payment.stripe_payment_intent:
            Payment.objects.filter(pk=payment.pk).update(stripe_payment_intent=intent["id"])
    if payment is None:
        return None, None
    return Order.objects.select_for_update().get(pk=payment.order_id), payment


def _flag(order: Order, reason: str) -> None:
    if can_move(order, "payment_status", P.FLAGGED):
        order_move(order=order, field="payment_status", to=P.FLAGGED, reason=reason)
    Order.objects.filter(pk=order.pk).update(flag_reason=reason[:300])
    audit_record(actor=None, action="payment.flagged", obj=order, detail={"reason": reason})
    from marketplace.services import notify_staff

    notify_staff(message=f"Order #{order.pk}: payment held for review ({reason})",
                 url=f"/admin/orders/order/{order.pk}/change/")


def payment_intent_succeeded(intent: dict[str, Any]) -> None:
    order, payment = _order_for_intent(intent)
    if order is None:
        raise LookupError(f"no payment of ours for PaymentIntent {intent['id']}")
    if payment.status == Payment.Status.SUCCEEDED:
        return
    amount, currency = intent.get("amount"), str(intent.get("currency", "")).upper()
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.SUCCEEDED, error="",
                                                 stripe_charge=_charge_id(intent))
    if amount != order.total_minor or currency != order.currency or amount != payment.amount_minor:
        _flag(order, f"Stripe charged {amount} {currency} (minor units); the order is {order.total_minor} "
                     f"{order.currency}")
        return
    if order.payment_status == P.FLAGGED or not can_move(order, "payment_status", P.PAID):
        # Already paid (a replay), void (cancelled meanwhile) or held: money taken for a
        # cancelled order is refunded by an admin from the flagged list.
        if order.payment_status not in (P.PAID, P.PARTIALLY_REFUNDED, P.REFUNDED):
            _flag(order, f"payment arrived while the order was {order.get_payment_status_display().lower()}")
        return
    order = order_move(order=order, field="payment_status", to=P.PAID, reason=f"Stripe {intent['id']}")
    from orders.ledger_posting import ledger_charge

    ledger_charge(order=order, reference=f"charge:{intent['id']}")
    audit_record(actor=None, action="payment.succeeded", obj=order,
                 detail={"payment_intent": intent["id"], "amount_minor": amount, "currency": currency})
    from orders.notices import notify_buyer

    notify_buyer(order, f"Payment received for order #{order.pk}.")
    from orders.services import order_release

    order_release(order=order)


def payment_intent_failed(intent: dict[str, Any]) -> None:
    order, payment = _order_for_intent(intent)
    if order is None or payment.status != Payment.Status.PROCESSING:
        return  # a late failure after a success (out of order) changes nothing
    error = ((intent.get("last_payment_error") or {}).get("message") or "The card payment failed.")[:300]
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.FAILED, error=error)
    if can_move(order, "payment_status", P.FAILED):
        order_move(order=order, field="payment_status", to=P.FAILED, reason=error)


def invoice_paid(stripe_invoice: dict[str, Any]) -> None:
    invoice = Invoice.objects.select_for_update().filter(stripe_invoice=stripe_invoice["id"]).first()
    if invoice is None:
        raise LookupError(f"no invoice of ours for Stripe invoice {stripe_invoice['id']}")
    paid = stripe_invoice.get("amount_paid", stripe_invoice.get("total"))
    if paid != invoice.amount_minor or str(stripe_invoice.get("currency", "")).upper() != invoice.currency:
        order = Order.objects.select_for_update().get(pk=invoice.order_id)
        _flag(order, f"invoice {invoice.number} paid {paid} {stripe_invoice.get('currency', '')}; "
                     f"it is for {invoice.amount_minor} {invoice.currency}")
        return
    from orders.invoicing import invoice_settle

    invoice_settle(invoice=invoice, acting_user=None, reason=f"Stripe invoice {stripe_invoice['id']} paid")


def invoice_voided(stripe_invoice: dict[str, Any]) -> None:
    invoice = Invoice.objects.filter(stripe_invoice=stripe_invoice["id"], status=Invoice.Status.OPEN).first()
    if invoice is not None:
        from orders.invoicing import invoice_void

        invoice_void(invoice=invoice, acting_user=None, reason="Voided in Stripe")


def _charge_id(intent: dict[str, Any]) -> str:
    charge = intent.get("latest_charge") or ""
    return charge.get("id", "") if isinstance(charge, dict) else str(charge)


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "payment_intent.succeeded": payment_intent_succeeded,
    "payment_intent.payment_failed": payment_intent_failed,
    "invoice.paid": invoice_paid,
    "invoice.voided": invoice_voided,
}
