"""Invoices for institutions: a numbered document (orders/invoice_pdf.py renders it), sent
through Stripe's send-invoice flow when Stripe is configured, paid by Stripe's webhook or
by an admin with a reason, or void."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from marketplace.models import User
from marketplace.services import audit_record
from orders import stripe_gateway
from orders.exceptions import OrderError
from orders.ledger_posting import ledger_invoice_issued, ledger_invoice_paid
from orders.models import Invoice, Order
from orders.transitions import can_move, order_move

P = Order.PaymentStatus


def _next_number(year: int) -> str:
    """Gapless enough and unique: a PostgreSQL sequence, shown with the year."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('orders_invoice_number_seq')")
        (value,) = cursor.fetchone()
    return f"{settings.INVOICE_NUMBER_PREFIX}-{year}-{value:06d}"


@transaction.atomic
def invoice_issue(*, order: Order, acting_user: User | None) -> Invoice:
    today = timezone.localdate()
    invoice = Invoice.objects.create(
        order=order, number=_next_number(today.year), po_number=order.po_number, issued=today,
        due=today + timedelta(days=settings.INVOICE_DUE_DAYS), amount_minor=order.total_minor,
        currency=order.currency)
    ledger_invoice_issued(order=order, reference=f"invoice:{invoice.number}")
    audit_record(actor=acting_user, action="invoice.issue", obj=order,
                 detail={"invoice": invoice.number, "amount_minor": invoice.amount_minor, "currency": invoice.currency})
    if stripe_gateway.stripe_enabled():
        transaction.on_commit(lambda: invoice_send_to_stripe(invoice_id=invoice.pk))
    return invoice


def invoice_send_to_stripe(*, invoice_id: int) -> None:
    """Mirror the invoice in Stripe (customer, lines, finalize, send) so a bank transfer
    to Stripe marks it paid by webhook. Failure leaves our invoice valid: an admin can
    still settle it by hand."""
    invoice = Invoice.objects.select_related("order__buyer", "order__buyer_organization").get(pk=invoice_id)
    if invoice.stripe_invoice:
        return
    order = invoice.order
    try:
        customer = stripe_gateway.create_customer(
            email=order.buyer.email, name=str(order.buyer_organization or order.buyer),
            idempotency_key=f"invoice-{invoice.number}-customer")
        lines = [(f"{line.dataset.title} ({line.study_count} studies)", line.amount_minor)
                 for line in order.lines.select_related("dataset")]
        sent = stripe_gateway.create_send_invoice(
            customer=customer.id, lines=lines, currency=invoice.currency.lower(),
            days_until_due=settings.INVOICE_DUE_DAYS,
            metadata={"order_id": str(order.pk), "invoice_number": invoice.number},
            idempotency_key=f"invoice-{invoice.number}")
    except stripe_gateway.PaymentGatewayError as exc:
        audit_record(actor=None, action="invoice.stripe_failed", obj=order,
                     detail={"invoice": invoice.number, "error": exc.message})
        return
    Invoice.objects.filter(pk=invoice.pk).update(stripe_invoice=sent.id,
                                                 hosted_url=getattr(sent, "hosted_invoice_url", "") or "")


@transaction.atomic
def invoice_settle(*, invoice: Invoice, acting_user: User | None, reason: str, ip: str | None = None) -> Invoice:
    """Paid: by Stripe's webhook (acting_user None) or by an admin, who must say why."""
    reason = (reason or "").strip()
    if acting_user is not None and not reason:
        raise OrderError("Say how the invoice was paid (e.g. the bank transfer's reference).", code="reason_required")
    locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if locked.status == Invoice.Status.PAID:
        return locked
    if locked.status == Invoice.Status.VOID:
        raise OrderError(f"Invoice {locked.number} is void; it cannot be paid.", code="invoice_void")
    locked.status, locked.settled_at = Invoice.Status.PAID, timezone.now()
    locked.settled_by, locked.settle_reason = acting_user, reason[:300]
    locked.save(update_fields=["status", "settled_at", "settled_by", "settle_reason"])
    order = Order.objects.select_for_update().get(pk=locked.order_id)
    ledger_invoice_paid(order=order, reference=f"invoice-paid:{locked.number}")
    if can_move(order, "payment_status", P.PAID):
        order = order_move(order=order, field="payment_status", to=P.PAID, acting_user=acting_user,
                           reason=f"Invoice {locked.number} paid: {reason}")
    audit_record(actor=acting_user, action="invoice.paid", obj=order, ip=ip,
                 detail={"invoice": locked.number, "reason": reason})
    from orders.notices import notify_buyer

    notify_buyer(order, f"Invoice {locked.number} for order #{order.pk} is paid. Thank you.")
    from orders.services import order_complete_if_done, order_release

    if not order_release(order=order, acting_user=acting_user) and order.fulfilment_status != "unfulfilled":
        # Delivered on credit before: the providers are paid now that the money is in.
        from orders.payouts import providers_pay_later

        providers_pay_later(order=order)
    order_complete_if_done(order=order)
    return locked


@transaction.atomic
def invoice_void(*, invoice: Invoice, acting_user: User | None, reason: str, ip: str | None = None) -> Invoice:
    """Void an unpaid invoice: its order is cancelled (nothing delivered stays available)."""
    reason = (reason or "").strip()
    if not reason:
        raise OrderError("Give a reason when voiding an invoice.", code="reason_required")
    locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if locked.status != Invoice.Status.OPEN:
        raise OrderError(f"Invoice {locked.number} is {locked.get_status_display().lower()}; only unpaid invoices "
                         "are voided (refund a paid one).", code="invoice_not_open")
    from orders.services import order_cancel

    order_cancel(order=locked.order, acting_user=acting_user, reason=f"Invoice {locked.number} void: {reason}", ip=ip)
    locked.refresh_from_db()
    return locked


def invoice_void_for_cancelled(*, order: Order, reason: str, acting_user: User | None) -> None:
    """The cancelled order's open invoice becomes void and its receivable is reversed."""
    invoice = Invoice.objects.select_for_update().filter(order=order, status=Invoice.Status.OPEN).first()
    if invoice is None:
        return
    invoice.status, invoice.settled_at = Invoice.Status.VOID, timezone.now()
    invoice.settled_by, invoice.settle_reason = acting_user, reason[:300]
    invoice.save(update_fields=["status", "settled_at", "settled_by", "settle_reason"])
    from orders.refunds import ledger_reverse_lines

    ledger_reverse_lines(order=order, lines=list(order.lines.filter(refunded_minor=0)),
                         reference_prefix=f"invoice-void:{invoice.number}", from_account="buyer_receivable")
    if invoice.stripe_invoice and stripe_gateway.stripe_enabled():
        stripe_id = invoice.stripe_invoice
        transaction.on_commit(lambda: _void_in_stripe(stripe_id))
    audit_record(actor=acting_user, action="invoice.void", obj=order, detail={"invoice": invoice.number,
                                                                             "reason": reason})


def _void_in_stripe(stripe_id: str) -> None:
    try:
        stripe_gateway.void_invoice(invoice_id=stripe_id, idempotency_key=f"void-{stripe_id}")
    except stripe_gateway.PaymentGatewayError:
        pass  # our invoice is void either way; Stripe's copy is tidied by an admin
