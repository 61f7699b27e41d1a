"""Order decisions: the admin's contract decision, credit terms for invoiced orders,
cancellation, and the gate that releases an order for delivery once every condition holds.

Placing orders is in orders/checkout.py, prices in orders/quotes.py, money in
orders/payments.py (card), orders/invoicing.py, orders/refunds.py and orders/payouts.py."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from marketplace.exceptions import InvalidTransitionError
from marketplace.models import User
from marketplace.services import audit_record
from orders.consent import consent_require_given
from orders.entitlements import entitlements_start
from orders.exceptions import OrderError
from orders.models import Contract, Order, Signature
from orders.signals import order_access_stopped, order_released
from orders.signatures import CONTRACT, signature_create, signature_verify, signer_check
from orders.transitions import can_move, order_move

F, P, S = Order.FulfilmentStatus, Order.PaymentStatus, Order.Status
FIELD_STATUS, FIELD_PAYMENT, FIELD_FULFILMENT = "status", "payment_status", "fulfilment_status"


def money_settled(order: Order) -> bool:
    """Delivery may start: free, paid (by the verified webhook or an admin), or invoiced
    on credit an admin approved (and the invoice not void)."""
    if order.payment_status in (P.NOT_REQUIRED, P.PAID):
        return True
    return (order.payment_method == Order.PaymentMethod.INVOICE and order.credit_approved_at is not None
            and order.payment_status == P.UNPAID)


@transaction.atomic
def order_release(*, order: Order, acting_user: User | None = None) -> bool:
    """Start the delivery when the contract is approved and the money is settled; pay the
    providers their shares once the money is in. Safe to call after every event (a
    webhook, a decision): it acts once. True if it started the delivery now."""
    locked = Order.objects.select_for_update(of=("self",)).select_related("contract").get(pk=order.pk)
    if locked.status != S.OPEN or locked.fulfilment_status != F.UNFULFILLED:
        return False
    if locked.contract.status != Contract.Status.APPROVED or not money_settled(locked):
        return False
    order_move(order=locked, field=FIELD_FULFILMENT, to=F.FULFILLING, acting_user=acting_user,
               reason="Contract approved and payment settled")
    # Access is granted now: each line's licence term starts now.
    entitlements_start(order=locked)
    # workspaces builds on orders and starts the delivery (workspaces/receivers.py): the
    # signal is sent inside this transaction, so the release and its delivery are one.
    order_released.send(sender=Order, order=locked, acting_user=acting_user)
    if locked.payment_status == P.PAID:
        from orders.payouts import providers_pay_later

        providers_pay_later(order=locked)
    return True


def order_complete_if_done(*, order: Order) -> None:
    """Completed: delivered and the money settled for good (paid or free)."""
    locked = Order.objects.get(pk=order.pk)
    if (locked.status == S.OPEN and locked.fulfilment_status == F.FULFILLED
            and locked.payment_status in (P.PAID, P.NOT_REQUIRED, P.PARTIALLY_REFUNDED)):
        order_move(order=locked, field=FIELD_STATUS, to=S.COMPLETED, reason="Delivered and paid")


@transaction.atomic
def contract_decide(
    *, contract: Contract, approve: bool, acting_user: User, reason: str = "", ip: str | None = None,
    signature: Signature | None = None,
) -> Contract:
    """Admin approval or rejection of a contract. Approval needs the deciding admin's
    signature of this contract with the meaning "approval", still matching the contract
    (contract_approve_signed makes it from the password and TOTP code typed in the same
    request); rejection needs a reason. Approval releases the order when its money is
    settled; rejection cancels it (and refunds what was paid)."""
    # Lock so two admins deciding at once cannot both act (one approves, one rejects).
    locked = Contract.objects.select_for_update().select_related("order").get(pk=contract.pk)
    if locked.status != Contract.Status.PENDING:
        raise InvalidTransitionError(f"This contract was already {locked.get_status_display().lower()}.")
    if not approve and not reason.strip():
        raise OrderError("Give a reason when rejecting a contract.", code="reason_required")
    if approve and locked.order.status != S.OPEN:
        raise InvalidTransitionError(f"Order #{locked.order_id} is {locked.order.get_status_display().lower()}.")
    if approve:
        consent_require_given(locked.order)  # the providers' consent comes before the admin's approval
    if approve and (signature is None or signature.signer_id != acting_user.pk
                    or signature.meaning != Signature.Meaning.APPROVAL or not signature_verify(signature, locked)):
        raise OrderError("Approving a contract needs your electronic signature of it (password and "
                         "authenticator code).", code="signature_required")
    locked.status = Contract.Status.APPROVED if approve else Contract.Status.REJECTED
    locked.decided_by, locked.decided_at, locked.decision_reason = acting_user, timezone.now(), reason.strip()
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
    detail = {"order_id": locked.order_id, "reason": reason.strip()}
    if signature is not None:
        detail["signature_id"] = signature.pk
    audit_record(actor=acting_user, action="contract.approve" if approve else "contract.reject", obj=locked, ip=ip,
                 detail=detail)
    if approve:
        order_release(order=locked.order, acting_user=acting_user)
    else:
        order_cancel(order=locked.order, acting_user=acting_user, reason=f"Contract rejected: {reason.strip()}",
                     ip=ip)
    return locked


def contract_approve_signed(*, contract: Contract, acting_user: User, password: str | None, totp_code: str | None,
                            ip: str | None = None) -> Contract:
    """An admin approves a contract by signing it (meaning "approval") with the password
    and TOTP code typed in this request. The credentials are checked first, outside the
    decision's transaction (a refusal stays in the audit trail and nothing is decided);
    the signature and the approval are then one transaction."""
    current = Contract.objects.select_related("order").get(pk=contract.pk)
    if current.status != Contract.Status.PENDING:
        raise InvalidTransitionError(f"This contract was already {current.get_status_display().lower()}.")
    consent_require_given(current.order)  # refused before the admin signs anything
    proof = signer_check(user=acting_user, password=password, totp_code=totp_code,
                         meaning=Signature.Meaning.APPROVAL, record_type=CONTRACT, record_id=str(current.pk), ip=ip)
    with transaction.atomic():
        locked = Contract.objects.select_for_update().select_related("order").get(pk=current.pk)
        signature = signature_create(proof=proof, meaning=Signature.Meaning.APPROVAL, record=locked, ip=ip)
        return contract_decide(contract=locked, approve=True, acting_user=acting_user, ip=ip, signature=signature)


@transaction.atomic
def credit_approve(*, order: Order, acting_user: User, ip: str | None = None) -> Order:
    """An admin grants credit terms to an invoiced order: it may be delivered before the
    invoice is paid (the invoice stays due)."""
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.payment_method != Order.PaymentMethod.INVOICE:
        raise OrderError("Only orders paid by invoice are delivered on credit.", code="not_invoice")
    if locked.status != S.OPEN or locked.payment_status not in (P.UNPAID, P.PAID):
        raise OrderError(f"Order #{locked.pk} is {locked.get_status_display().lower()} "
                         f"({locked.get_payment_status_display().lower()}).", code="credit_not_possible")
    if locked.credit_approved_at is None:
        locked.credit_approved_at, locked.credit_approved_by = timezone.now(), acting_user
        locked.save(update_fields=["credit_approved_at", "credit_approved_by"])
        audit_record(actor=acting_user, action="order.credit_approve", obj=locked, ip=ip,
                     detail={"total_minor": locked.total_minor, "currency": locked.currency})
    order_release(order=locked, acting_user=acting_user)
    return locked


@transaction.atomic
def order_cancel(*, order: Order, acting_user: User | None, reason: str, ip: str | None = None) -> Order:
    """Cancel an order, giving a reason: its delivery stops (none of its files is served
    again), an open invoice is voided and money taken by card is refunded. Orders are never
    deleted: cancelling is the way out."""
    reason = reason.strip()
    if not reason:
        raise OrderError("Give a reason when cancelling an order.", code="reason_required")
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.status == S.CANCELLED:
        return locked
    if not can_move(locked, FIELD_STATUS, S.CANCELLED) or locked.status == S.COMPLETED:
        raise InvalidTransitionError(
            f"Order #{locked.pk} was delivered; refund it instead (its access then ends).")
    before = locked.status
    if locked.payment_status in (P.PAID, P.PARTIALLY_REFUNDED, P.FLAGGED):
        from orders.refunds import order_refund

        # The refund cancels the order itself once everything is given back.
        order_refund(order=locked, line=None, reason=reason, acting_user=acting_user, ip=ip)
        locked.refresh_from_db()
    if locked.status != S.CANCELLED:
        locked = order_move(order=locked, field=FIELD_STATUS, to=S.CANCELLED, acting_user=acting_user, reason=reason)
    _stop_everything(locked, reason=reason, acting_user=acting_user)
    audit_record(actor=acting_user, action="order.cancel", obj=locked, ip=ip, detail={"from": before, "reason": reason})
    return locked


def _stop_everything(order: Order, *, reason: str, acting_user: User | None) -> None:
    if can_move(order, FIELD_PAYMENT, P.VOID):
        order_move(order=order, field=FIELD_PAYMENT, to=P.VOID, acting_user=acting_user, reason=reason)
    if order.payment_method == Order.PaymentMethod.INVOICE:
        from orders.invoicing import invoice_void_for_cancelled

        invoice_void_for_cancelled(order=order, reason=reason, acting_user=acting_user)
    if can_move(order, FIELD_FULFILMENT, F.STOPPED):
        order_move(order=order, field=FIELD_FULFILMENT, to=F.STOPPED, acting_user=acting_user, reason=reason)
    order.lines.filter(access_ended_at__isnull=True).update(access_ended_at=timezone.now(),
                                                            access_end_reason=reason[:300])
    # Like order_release: workspaces stops the delivery and takes its grants back inside this
    # transaction, so cancellation and the stopped delivery are one.
    order_access_stopped.send(sender=Order, order=order, reason=f"Order cancelled: {reason}",
                              acting_user=acting_user)
