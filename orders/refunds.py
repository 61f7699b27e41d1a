"""Refunds by an admin, with a reason: the whole order or one line. The money goes back
(Stripe refund for card payments; for a paid invoice the admin returns it by bank and the
ledger records it), the providers' shares are reversed, and the refunded lines' access
ends at once."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from marketplace.models import User
from marketplace.services import audit_record
from orders import stripe_gateway
from orders.currency import format_money
from orders.exceptions import OrderError
from orders.ledger import services as ledger
from orders.ledger_posting import line_shares
from orders.models import Order, OrderLine, Payment, ProviderTransfer, Refund
from orders.signals import lines_access_ended
from orders.transitions import can_move, order_move

P = Order.PaymentStatus
REFUNDABLE = (P.PAID, P.PARTIALLY_REFUNDED, P.FLAGGED)


def ledger_reverse_lines(*, order: Order, lines: list[OrderLine], reference_prefix: str, from_account: str) -> None:
    """Reverse these lines' shares and fees in the ledger (idempotent per line)."""
    shares = line_shares(order)
    for line in lines:
        share = shares[line.pk]
        ledger.post_refund(reference=f"{reference_prefix}:line:{line.pk}", order_id=order.pk, currency=order.currency,
                           parts=[(line.provider, line.pk, share.gross_minor - share.fee_minor, share.fee_minor)],
                           from_account=from_account)


def order_refund(*, order: Order, line: OrderLine | None, reason: str, acting_user: User | None,
                 ip: str | None = None) -> list[Refund]:
    """Refund the whole order (line None) or one line, in full. Refused with a reason for
    what cannot be refunded; a line already refunded is not refunded twice."""
    reason = (reason or "").strip()
    if not reason:
        raise OrderError("Give a reason for the refund.", code="reason_required")
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.payment_status not in REFUNDABLE:
            raise OrderError(f"Order #{locked.pk} is {locked.get_payment_status_display().lower()}: nothing was paid "
                             "to refund." + (" Void its invoice instead." if locked.payment_method == "invoice" else ""),
                             code="not_refundable")
        lines = list(locked.lines.select_for_update().filter(refunded_minor=0))
        if line is not None:
            lines = [candidate for candidate in lines if candidate.pk == line.pk]
            if not lines:
                raise OrderError("This line was already refunded or is not part of the order.", code="line_refunded")
        if not lines:
            raise OrderError(f"Order #{locked.pk} has nothing left to refund.", code="nothing_to_refund")
        amount = sum(candidate.amount_minor for candidate in lines)
        if locked.payment_status == P.FLAGGED:
            # Held money: give back what Stripe actually charged, whatever the order said.
            amount = locked.payments.filter(status=Payment.Status.SUCCEEDED).values_list("amount_minor", flat=True) \
                .first() or amount
    card = locked.payment_method == Order.PaymentMethod.CARD
    stripe_refund_id = ""
    if card:
        payment = locked.payments.filter(status=Payment.Status.SUCCEEDED).exclude(stripe_payment_intent=None).first()
        if payment is None:
            raise OrderError(f"Order #{locked.pk} has no completed card payment to refund.", code="no_payment")
        key = f"refund-order-{locked.pk}-lines-{'-'.join(str(c.pk) for c in lines)}"
        try:
            refund = stripe_gateway.create_refund(payment_intent=payment.stripe_payment_intent, amount_minor=amount,
                                                  metadata={"order_id": str(locked.pk)}, idempotency_key=key)
        except stripe_gateway.PaymentGatewayError as exc:
            raise OrderError(f"Stripe refused the refund: {exc.message}", code=exc.code) from exc
        stripe_refund_id = refund.id
    return _record_refund(order=locked, lines=lines, amount=amount, reason=reason, acting_user=acting_user,
                          stripe_refund_id=stripe_refund_id, whole_order=line is None, ip=ip)


@transaction.atomic
def _record_refund(*, order: Order, lines: list[OrderLine], amount: int, reason: str, acting_user: User | None,
                   stripe_refund_id: str, whole_order: bool, ip: str | None) -> list[Refund]:
    locked = Order.objects.select_for_update().get(pk=order.pk)
    flagged = locked.payment_status == P.FLAGGED
    refunds = []
    now = timezone.now()
    for line in lines:
        fresh = OrderLine.objects.select_for_update().get(pk=line.pk)
        if fresh.refunded_minor:
            continue  # refunded meanwhile
        fresh.refunded_minor = fresh.amount_minor
        fresh.access_ended_at, fresh.access_end_reason = fresh.access_ended_at or now, f"Refunded: {reason}"[:300]
        fresh.save(update_fields=["refunded_minor", "access_ended_at", "access_end_reason"])
        refunds.append(Refund.objects.create(order=locked, line=None if whole_order else fresh,
                                             amount_minor=fresh.amount_minor, currency=locked.currency, reason=reason,
                                             acting_user=acting_user, stripe_refund=stripe_refund_id))
    if not flagged:
        # Flagged money never reached the providers' accounts: nothing of theirs to reverse.
        ledger_reverse_lines(order=locked, lines=lines, reference_prefix=f"refund:{stripe_refund_id or 'manual'}",
                             from_account="cash")
        _reverse_transfers(order=locked, lines=lines)
    everything = not locked.lines.filter(refunded_minor=0).exists()
    to = P.REFUNDED if everything else P.PARTIALLY_REFUNDED
    if can_move(locked, "payment_status", to):
        locked = order_move(order=locked, field="payment_status", to=to, acting_user=acting_user, reason=reason)
    audit_record(actor=acting_user, action="order.refund", obj=locked, ip=ip, detail={
        "lines": [line.pk for line in lines], "amount_minor": amount, "currency": locked.currency,
        "stripe_refund": stripe_refund_id, "reason": reason})
    from orders.notices import notify_buyer

    notify_buyer(locked, f"Order #{locked.pk}: {format_money(amount, locked.currency)} refunded ({reason}); "
                         "access to the refunded data has ended.")

    # The refunded lines' files leave the workspace (workspaces/receivers.py), in this transaction.
    lines_access_ended.send(sender=Order, order=locked, line_ids=[line.pk for line in lines],
                            reason=f"Refunded: {reason}")
    if everything and locked.status != Order.Status.CANCELLED:
        order_move(order=locked, field="status", to=Order.Status.CANCELLED, acting_user=acting_user,
                   reason=f"Refunded in full: {reason}")
        if can_move(locked, "fulfilment_status", Order.FulfilmentStatus.STOPPED):
            order_move(order=locked, field="fulfilment_status", to=Order.FulfilmentStatus.STOPPED,
                       acting_user=acting_user, reason="Refunded in full")
    return refunds


def _reverse_transfers(*, order: Order, lines: list[OrderLine]) -> None:
    """Take back what the providers of these lines were already sent. When a provider's
    Stripe balance cannot cover it, the shortfall becomes a receivable netted from its
    next sales."""
    shares = line_shares(order)
    by_provider: dict[int, int] = {}
    for line in lines:
        share = shares[line.pk]
        by_provider[line.provider_id] = by_provider.get(line.provider_id, 0) + share.gross_minor - share.fee_minor
    for provider_id, net in by_provider.items():
        transfer = ProviderTransfer.objects.select_for_update().filter(order=order, provider_id=provider_id).first()
        if transfer is None or transfer.status not in (ProviderTransfer.Status.PAID,
                                                       ProviderTransfer.Status.OUTSIDE_STRIPE):
            # Not sent yet: the provider's payable was reduced by the refund itself.
            if transfer is not None and transfer.status == ProviderTransfer.Status.PENDING:
                transfer.amount_minor = max(0, transfer.amount_minor - net)
                transfer.save(update_fields=["amount_minor"])
            continue
        amount = min(net, transfer.amount_minor - transfer.reversed_minor)
        if amount <= 0:
            continue
        reference = f"reversal:order:{order.pk}:provider:{provider_id}:{transfer.reversed_minor}"
        if transfer.status == ProviderTransfer.Status.PAID and transfer.stripe_transfer:
            from orders.payouts import reverse_in_stripe

            if reverse_in_stripe(transfer=transfer, amount_minor=amount, reference=reference):
                ledger.post_transfer_reversal(reference=reference, order_id=order.pk, provider=transfer.provider,
                                              currency=order.currency, amount_minor=amount)
            else:
                ledger.post_reversal_shortfall(reference=reference, order_id=order.pk, provider=transfer.provider,
                                               currency=order.currency, amount_minor=amount)
        else:
            # Paid outside Stripe: the provider owes it back, netted from later payouts.
            ledger.post_reversal_shortfall(reference=reference, order_id=order.pk, provider=transfer.provider,
                                           currency=order.currency, amount_minor=amount)
        transfer.reversed_minor += amount
        transfer.save(update_fields=["reversed_minor"])
