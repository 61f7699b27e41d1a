"""Providers' shares: one transfer per provider per order to its Stripe Connect account
(separate charges and transfers, tied to the charge and the order's transfer group), or
paid outside Stripe from the admin's payout CSV. What a provider owes after a reversal it
could not cover is netted from its next transfer."""
from __future__ import annotations

import logging

from django.db import transaction

from marketplace.models import Organization, User
from marketplace.services import audit_record
from orders import stripe_gateway
from orders.exceptions import OrderError
from orders.ledger import services as ledger
from orders.ledger_posting import provider_nets
from orders.models import Order, Payment, ProviderTransfer

logger = logging.getLogger(__name__)
T = ProviderTransfer.Status


def providers_pay_later(*, order: Order) -> None:
    """After the surrounding transaction commits, a worker sends the transfers (Stripe
    is called outside database transactions)."""
    from orders.tasks import providers_pay_task

    order_id = order.pk
    transaction.on_commit(lambda: providers_pay_task.delay(order_id))


def providers_pay(*, order_id: int) -> list[ProviderTransfer]:
    """Create (once) and send each provider's transfer for this order. Safe to run again:
    a sent transfer is not sent twice (unique row, Stripe idempotency key)."""
    order = Order.objects.get(pk=order_id)
    if order.payment_status not in (Order.PaymentStatus.PAID, Order.PaymentStatus.PARTIALLY_REFUNDED):
        return []
    transfers = []
    for provider_id, net in sorted(provider_nets(order).items()):
        transfer, _ = ProviderTransfer.objects.get_or_create(
            order=order, provider_id=provider_id, defaults={"amount_minor": net, "currency": order.currency})
        if transfer.status == T.PENDING or transfer.status == T.FAILED:
            transfer = _send(transfer)
        transfers.append(transfer)
    return transfers


def _charge_of(order: Order) -> str:
    payment = order.payments.filter(status=Payment.Status.SUCCEEDED).exclude(stripe_charge="").first()
    return payment.stripe_charge if payment else ""


def _send(transfer: ProviderTransfer) -> ProviderTransfer:
    provider = transfer.provider
    if not (provider.stripe_account_id and stripe_gateway.stripe_enabled()):
        return transfer  # stays pending: paid outside Stripe from the payout CSV
    order = transfer.order
    with transaction.atomic():
        locked = ProviderTransfer.objects.select_for_update().get(pk=transfer.pk)
        if locked.status not in (T.PENDING, T.FAILED):
            return locked
        owed = ledger.provider_balances(provider, order.currency)["receivable"]
        netted = min(owed, locked.amount_minor)
        if netted > 0:
            ledger.post_receivable_netting(reference=f"netting:order:{order.pk}:provider:{provider.pk}",
                                           provider=provider, currency=order.currency, amount_minor=netted)
        amount = locked.amount_minor - netted
    stripe_id = ""
    if amount > 0:
        try:
            sent = stripe_gateway.create_transfer(
                amount_minor=amount, currency=order.currency.lower(), destination=provider.stripe_account_id,
                transfer_group=order.transfer_group, source_transaction=_charge_of(order) or None,
                metadata={"order_id": str(order.pk), "provider_id": str(provider.pk)},
                idempotency_key=f"transfer-order-{order.pk}-provider-{provider.pk}")
        except stripe_gateway.PaymentGatewayError as exc:
            ProviderTransfer.objects.filter(pk=transfer.pk).update(status=T.FAILED, error=exc.message[:300])
            logger.warning("transfer for order %s provider %s failed: %s", order.pk, provider.pk, exc.code)
            return ProviderTransfer.objects.get(pk=transfer.pk)
        stripe_id = sent.id
    with transaction.atomic():
        if amount > 0:
            ledger.post_transfer(reference=f"transfer:order:{order.pk}:provider:{provider.pk}", order_id=order.pk,
                                 provider=provider, currency=order.currency, amount_minor=amount)
        ProviderTransfer.objects.filter(pk=transfer.pk).update(status=T.PAID, stripe_transfer=stripe_id, error="")
        audit_record(actor=None, action="payout.transfer", obj=order, detail={
            "provider_id": provider.pk, "amount_minor": amount, "netted_minor": netted, "stripe_transfer": stripe_id})
    return ProviderTransfer.objects.get(pk=transfer.pk)


@transaction.atomic
def transfer_mark_paid_outside(*, transfer: ProviderTransfer, acting_user: User, reason: str,
                               ip: str | None = None) -> ProviderTransfer:
    """An admin paid this share outside Stripe (the payout CSV): the ledger records it."""
    reason = (reason or "").strip()
    if not reason:
        raise OrderError("Say how the provider was paid (e.g. the bank transfer's reference).", code="reason_required")
    locked = ProviderTransfer.objects.select_for_update().select_related("order", "provider").get(pk=transfer.pk)
    if locked.status not in (T.PENDING, T.FAILED):
        raise OrderError(f"This transfer is already {locked.get_status_display().lower()}.", code="transfer_done")
    if locked.amount_minor > 0:
        ledger.post_transfer(reference=f"transfer:order:{locked.order_id}:provider:{locked.provider_id}",
                             order_id=locked.order_id, provider=locked.provider, currency=locked.currency,
                             amount_minor=locked.amount_minor)
    locked.status, locked.error = T.OUTSIDE_STRIPE, reason[:300]
    locked.save(update_fields=["status", "error"])
    audit_record(actor=acting_user, action="payout.outside_stripe", obj=locked.order, ip=ip,
                 detail={"provider_id": locked.provider_id, "amount_minor": locked.amount_minor, "reason": reason})
    return locked


def reverse_in_stripe(*, transfer: ProviderTransfer, amount_minor: int, reference: str) -> bool:
    """Reverse part of a sent transfer. False when the provider's Stripe balance cannot
    cover it (the caller records a receivable); other failures are raised."""
    try:
        stripe_gateway.reverse_transfer(transfer_id=transfer.stripe_transfer, amount_minor=amount_minor,
                                        metadata={"order_id": str(transfer.order_id)},
                                        idempotency_key=reference.replace(":", "-"))
    except stripe_gateway.PaymentGatewayError as exc:
        if exc.code == "balance_insufficient":
            return False
        raise OrderError(f"Stripe refused to reverse the provider's transfer: {exc.message}", code=exc.code) from exc
    return True


def connected_account_create(*, provider: Organization, acting_user: User, email: str) -> Organization:
    """Open a Stripe Connect account for a provider (an admin does this once)."""
    if provider.stripe_account_id:
        return provider
    account = stripe_gateway.create_connected_account(email=email, country=provider.country or "US",
                                                      idempotency_key=f"account-provider-{provider.pk}")
    Organization.objects.filter(pk=provider.pk, stripe_account_id="").update(stripe_account_id=account.id)
    audit_record(actor=acting_user, action="payout.account_create", obj=provider, detail={"account": account.id})
    provider.refresh_from_db()
    return provider


def providers_retry_failed() -> int:
    """Beat: send again the transfers that failed (Stripe unreachable, account not ready).
    Each retry uses the same idempotency key, so a transfer Stripe did make is not doubled."""
    order_ids = sorted(set(ProviderTransfer.objects.filter(status=T.FAILED).values_list("order_id", flat=True)))
    for order_id in order_ids:
        providers_pay(order_id=order_id)
    return len(order_ids)
