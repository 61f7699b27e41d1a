"""Orders and contracts: quote, place (accepting the data use agreement), admin decision."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import Dataset
from catalog.selectors import clean_study_criteria, studies_matching
from marketplace.exceptions import InvalidTransitionError
from marketplace.models import User
from marketplace.services import audit_record
from orders.exceptions import AgreementNotAcceptedError, EmptyOrderError, OrderError
from orders.models import Contract, DuaTemplate, Order, OrderStatusChange
from orders.money import Money


@dataclass(frozen=True)
class Quote:
    dataset_id: int
    criteria: dict[str, list[str]]
    study_count: int
    unit_price: Money
    total: Money

    @property
    def is_free(self) -> bool:
        return self.total.amount == 0


def order_quote(*, dataset: Dataset, criteria: dict[str, Any] | None = None) -> Quote:
    """Price = matching studies × the dataset's price per study, shown before confirming."""
    cleaned = clean_study_criteria(criteria or {})
    count = studies_matching(dataset=dataset, criteria=cleaned).count()
    unit = Money(dataset.price_per_study, dataset.currency)
    return Quote(dataset_id=dataset.pk, criteria=cleaned, study_count=count, unit_price=unit, total=unit.times(count))


@transaction.atomic
def order_place(
    *,
    buyer: User,
    dataset: Dataset,
    criteria: dict[str, Any] | None,
    accept_agreement: bool,
    dua_template: DuaTemplate,
    expected_total: Decimal | None = None,
    ip: str | None = None,
) -> Order:
    """Create an order for the matching studies and its contract (awaiting an admin).

    `expected_total` is the price the buyer saw; if the price changed meanwhile the order is
    refused rather than charged differently.
    """
    if dataset.status != Dataset.Status.PUBLISHED:
        raise OrderError("This dataset is not available for ordering.", code="not_published")
    if not accept_agreement:
        raise AgreementNotAcceptedError("You must accept the data use agreement to place the order.")
    quote = order_quote(dataset=dataset, criteria=criteria)
    if quote.study_count == 0:
        raise EmptyOrderError("No studies match this filter; relax a criterion and try again.")
    if expected_total is not None and Decimal(expected_total) != quote.total.amount:
        raise OrderError("The price changed since you saw it; review the new quote.", code="price_changed")
    order = Order.objects.create(
        buyer=buyer, dataset=dataset, criteria=quote.criteria, study_count=quote.study_count,
        unit_price=quote.unit_price.amount, total=quote.total.amount, currency=quote.total.currency,
        payment_method=Order.PaymentMethod.FREE if quote.is_free else Order.PaymentMethod.INVOICE,
    )
    order.studies.set(studies_matching(dataset=dataset, criteria=quote.criteria))
    Contract.objects.create(
        order=order, template=dua_template, template_version=dua_template.version, text=dua_template.text,
        accepted_by=buyer, accepted_at=timezone.now(), accepted_ip=ip,
    )
    OrderStatusChange.objects.create(order=order, old_status="", new_status=order.status, acting_user=buyer)
    audit_record(actor=buyer, action="order.place", obj=order, ip=ip, detail={
        "dataset_id": dataset.pk, "studies": quote.study_count, "total": str(quote.total.amount),
        "currency": quote.total.currency, "dua_version": dua_template.version,
    })
    return order


@transaction.atomic
def order_transition(*, order: Order, to: str, acting_user: User | None, reason: str = "") -> Order:
    """The one service that moves an order. Locks the row; quiet if already there."""
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.status == to:
        return locked
    if to not in Order.TRANSITIONS[locked.status]:
        raise InvalidTransitionError(
            f"Order #{locked.pk} cannot move from {locked.get_status_display()} to {Order.Status(to).label}.")
    old = locked.status
    locked.status = to
    locked.save(update_fields=["status"])
    OrderStatusChange.objects.create(order=locked, old_status=old, new_status=to, acting_user=acting_user,
                                     reason=reason)
    return locked


@transaction.atomic
def contract_decide(
    *, contract: Contract, approve: bool, acting_user: User, reason: str = "", ip: str | None = None
) -> Contract:
    """Admin approval or rejection of a contract; approval starts the delivery."""
    # Lock so two admins deciding at once cannot both act (one approves, one rejects).
    locked = Contract.objects.select_for_update().select_related("order").get(pk=contract.pk)
    if locked.status != Contract.Status.PENDING:
        raise InvalidTransitionError(f"This contract was already {locked.get_status_display().lower()}.")
    if not approve and not reason.strip():
        raise OrderError("Give a reason when rejecting a contract.", code="reason_required")
    locked.status = Contract.Status.APPROVED if approve else Contract.Status.REJECTED
    locked.decided_by, locked.decided_at, locked.decision_reason = acting_user, timezone.now(), reason.strip()
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
    order_transition(order=locked.order, to=Order.Status.APPROVED if approve else Order.Status.REJECTED,
                     acting_user=acting_user, reason=reason)
    audit_record(actor=acting_user, action="contract.approve" if approve else "contract.reject", obj=locked, ip=ip,
                 detail={"order_id": locked.order_id, "reason": reason.strip()})
    if approve:
        # The one call against the import direction (workspaces builds on orders): an
        # approved contract must start its delivery in the same transaction.
        from workspaces.services import delivery_create

        delivery_create(order=locked.order, acting_user=acting_user)
    return locked
