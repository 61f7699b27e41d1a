"""Provider consent per order: a dataset may ask that each order of it wait for a provider
member's decision (Dataset.requires_provider_consent). Its lines start "pending" at
checkout and the provider's members are told; a member reads who orders and what for,
then approves by signing the line (password, and TOTP code when the account has TOTP:
orders/signatures.py, meaning "approval") or declines with a reason, which cancels the
order. The admin's contract approval comes last: it is refused while a line is pending
or declined (orders/services.py)."""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from marketplace.exceptions import InvalidTransitionError, NotFoundError
from marketplace.models import Organization, User
from marketplace.services import audit_record, notification_send, notify_staff
from orders.exceptions import OrderError
from orders.models import Order, OrderLine, Signature
from orders.notices import notify_buyer
from orders.signatures import ORDER_LINE, signature_create, signer_check

logger = logging.getLogger(__name__)

Consent = OrderLine.ConsentStatus
MAX_CONSENT_REASON = 2000
BLOCKING = (Consent.PENDING, Consent.DECLINED)


class ConsentPendingError(OrderError):
    code = "consent_pending"
    status = 409


def consent_initial_status(dataset) -> str:  # noqa: ANN001 - catalog.models.Dataset
    return Consent.PENDING if getattr(dataset, "requires_provider_consent", False) else Consent.NOT_REQUIRED


def consent_queue_url(line: OrderLine | None = None) -> str:
    path = reverse("consent_line", args=[line.pk]) if line is not None else reverse("consent_queue")
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def consent_request_notify(*, order: Order) -> None:
    """Tell the members of each provider with a pending line of the order (after commit)."""
    lines = list(order.lines.filter(consent_status=Consent.PENDING).select_related("dataset", "provider"))
    for line in lines:
        members = list(User.objects.filter(memberships__organization_id=line.provider_id, is_active=True))
        message = f"Order #{order.pk} of {line.dataset.title} waits for your consent."
        url = consent_queue_url(line)
        transaction.on_commit(lambda members=members, message=message, url=url: [
            notification_send(user=member, message=message, url=url) for member in members])


# ---- reads -----------------------------------------------------------------------------

def consent_lines_for_provider_user(*, user: User) -> QuerySet[OrderLine]:
    """Lines of datasets that ask for consent, of the providers the user is a member of."""
    if not user.is_authenticated:
        return OrderLine.objects.none()
    providers = Organization.objects.filter(kind=Organization.Kind.PROVIDER, memberships__user=user)
    return (OrderLine.objects.filter(provider__in=providers).exclude(consent_status=Consent.NOT_REQUIRED)
            .select_related("order__buyer_organization", "dataset", "provider", "consent_decided_by")
            .order_by("-order__created", "-id"))


def access_consent_line(*, user: User, line_id: int) -> OrderLine:
    """A line the user may decide on; the same NotFoundError for missing and not theirs."""
    line = consent_lines_for_provider_user(user=user).filter(pk=line_id).first()
    if line is None:
        raise NotFoundError("Order line not found.")
    return line


def consent_blocking_lines(order: Order) -> list[OrderLine]:
    return list(order.lines.filter(consent_status__in=BLOCKING).select_related("dataset", "provider"))


def consent_require_given(order: Order) -> None:
    """ConsentPendingError while a provider has not consented to one of the order's lines."""
    blocking = consent_blocking_lines(order)
    if not blocking:
        return
    names = "; ".join(f"{line.dataset.title} ({line.provider.name}): {line.get_consent_status_display().lower()}"
                      for line in blocking)
    raise ConsentPendingError(f"The contract of order #{order.pk} cannot be approved before every provider that "
                              f"asks for it has consented ({names}).")


# ---- writes ----------------------------------------------------------------------------

def _line_for_decider(*, user: User, line_id: int, action: str, ip: str | None) -> OrderLine:
    """The line if the user may decide on it. Otherwise the attempt is audited (outside any
    transaction, so the record stays) and NotFoundError raised, alike for lines that do
    not exist and lines of another provider."""
    try:
        return access_consent_line(user=user, line_id=line_id)
    except NotFoundError:
        audit_record(actor=user, action="consent.refused", ip=ip, detail={
            "line_id": line_id, "attempted": action, "line_exists": OrderLine.objects.filter(pk=line_id).exists()})
        raise


def _locked_pending(line_id: int) -> OrderLine:
    # Two members deciding at once (one approves, one declines): the row lock makes the
    # second see the first's decision and stop.
    line = (OrderLine.objects.select_for_update(of=("self",)).select_related("order", "dataset", "provider")
            .get(pk=line_id))
    if line.consent_status != Consent.PENDING:
        raise InvalidTransitionError(f"This line was already decided ({line.get_consent_status_display().lower()}).")
    if line.order.status != Order.Status.OPEN:
        raise InvalidTransitionError(f"Order #{line.order_id} is {line.order.get_status_display().lower()}.")
    return line


def consent_approve_signed(*, line_id: int, acting_user: User, password: str | None, totp_code: str | None,
                           ip: str | None = None) -> OrderLine:
    """A provider member consents to one order line by signing it (meaning "approval") with
    the password, and TOTP code when the account has TOTP, typed in this request. The
    credentials are checked outside the decision's transaction (a refusal stays audited);
    the signature and the consent are one transaction. The buyer is told; the staff are
    told once no line of the order waits any more."""
    line = _line_for_decider(user=acting_user, line_id=line_id, action="approve", ip=ip)
    if line.consent_status != Consent.PENDING:
        raise InvalidTransitionError(f"This line was already decided ({line.get_consent_status_display().lower()}).")
    proof = signer_check(user=acting_user, password=password, totp_code=totp_code,
                         meaning=Signature.Meaning.APPROVAL, record_type=ORDER_LINE, record_id=str(line.pk), ip=ip)
    with transaction.atomic():
        locked = _locked_pending(line.pk)
        signature = signature_create(proof=proof, meaning=Signature.Meaning.APPROVAL, record=locked, ip=ip)
        locked.consent_status = Consent.APPROVED
        locked.consent_decided_by, locked.consent_decided_at = acting_user, timezone.now()
        locked.save(update_fields=["consent_status", "consent_decided_by", "consent_decided_at"])
        audit_record(actor=acting_user, action="consent.approve", obj=locked, ip=ip, detail={
            "order_id": locked.order_id, "provider_id": locked.provider_id, "signature_id": signature.pk})
        notify_buyer(locked.order, f"{locked.provider.name} consented to your order #{locked.order_id} "
                                   f"of {locked.dataset.title}.")
        if not locked.order.lines.filter(consent_status__in=BLOCKING).exists():
            message = f"Order #{locked.order_id}: every provider consented; its contract awaits approval."
            url = f"{settings.SITE_URL.rstrip('/')}{reverse('admin:orders_contract_changelist')}"
            transaction.on_commit(lambda: notify_staff(message=message, url=url))
        return locked


def consent_decline(*, line_id: int, acting_user: User, reason: str, ip: str | None = None) -> OrderLine:
    """A provider member declines an order line, with a reason: the order is cancelled with
    that reason (money taken is refunded) and the buyer is told."""
    line = _line_for_decider(user=acting_user, line_id=line_id, action="decline", ip=ip)
    reason = (reason or "").strip()
    if not reason:
        raise OrderError("Give a reason when declining; the buyer reads it.", code="reason_required")
    if len(reason) > MAX_CONSENT_REASON:
        raise OrderError(f"The reason is longer than {MAX_CONSENT_REASON} characters.", code="reason_long")
    with transaction.atomic():
        locked = _locked_pending(line.pk)
        locked.consent_status = Consent.DECLINED
        locked.consent_decided_by, locked.consent_decided_at = acting_user, timezone.now()
        locked.consent_reason = reason
        locked.save(update_fields=["consent_status", "consent_decided_by", "consent_decided_at", "consent_reason"])
        audit_record(actor=acting_user, action="consent.decline", obj=locked, ip=ip, detail={
            "order_id": locked.order_id, "provider_id": locked.provider_id, "reason": reason})
        # order_cancel is imported here: orders.services imports this module for the
        # contract's consent check.
        from orders.services import order_cancel

        order_cancel(order=locked.order, acting_user=acting_user, ip=ip,
                     reason=f"{locked.provider.name} declined to consent to {locked.dataset.title}: {reason}")
        notify_buyer(locked.order, f"{locked.provider.name} declined your order #{locked.order_id} of "
                                   f"{locked.dataset.title}: {reason}. The order is cancelled.")
        return locked
