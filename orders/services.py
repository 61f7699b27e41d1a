"""Orders and contracts: quote, place (accepting the data use agreement), admin decision."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.disclosure import BelowThresholdError, effective_threshold, require_disclosable
from catalog.models import Dataset
from catalog.search.criteria import cohort_criteria, cohort_from, describe
from catalog.search.service import cohort_study_ids, dataset_study_count
from marketplace.exceptions import ApplicationError, InvalidTransitionError
from marketplace.ratelimit import rate_limit_hit, requester_key
from marketplace.models import User
from marketplace.services import audit_record
from orders.exceptions import AgreementNotAcceptedError, EmptyOrderError, OrderError
from orders.models import Contract, DuaTemplate, Order, OrderStatusChange
from orders.money import Money


@dataclass(frozen=True)
class Quote:
    dataset_id: int
    criteria: dict[str, list[str]]  # the cohort's whole definition (catalog/search/criteria.py)
    study_count: int
    unit_price: Money
    total: Money
    study_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def is_free(self) -> bool:
        return self.total.amount == 0

    @property
    def criteria_words(self) -> list[dict[str, str]]:
        return describe(cohort_from(self.criteria))


def order_quote(*, dataset: Dataset, criteria: Any = None) -> Quote:
    """Price = the studies of this dataset the cohort counts × the price per study.

    ``criteria`` is the cohort's definition (keywords, filters, price range); the studies
    are taken exactly as the cohort builder counts them. Refused (BelowThresholdError)
    for 1 to threshold-1 studies (that price would give the count), and where the
    selection leaves out 1 to threshold-1 of the dataset's studies (the dataset's total
    is shown: the difference would give the count of those left out)."""
    query = cohort_from(criteria or {})
    ids = cohort_study_ids(query=query, dataset_id=dataset.pk)
    whole_dataset = not cohort_criteria(query)
    whole = len(ids) if whole_dataset else dataset_study_count(dataset_id=dataset.pk)
    require_disclosable(count=len(ids), threshold=effective_threshold(dataset.disclosure_threshold),
                        whole_dataset=whole_dataset, dataset_total=whole)
    unit = Money(dataset.price_per_study, dataset.currency)
    return Quote(dataset_id=dataset.pk, criteria=cohort_criteria(query), study_count=len(ids), unit_price=unit,
                 total=unit.times(len(ids)), study_ids=tuple(ids))


def quote_for_buyer(*, user: User, dataset: Dataset, criteria: Any = None, ip: str | None = None) -> Quote:
    """A quote asked for by a person: within their QUOTE_RATE, and audited (quotes of
    nested selections could be differenced; the trail shows who tried)."""
    rate_limit_hit(scope="quote", key=requester_key(user=user, ip=ip), rate=settings.QUOTE_RATE, what="quotes")
    try:
        quote = order_quote(dataset=dataset, criteria=criteria)
    except BelowThresholdError:
        audit_record(actor=user, action="quote.refused", obj=dataset, ip=ip,
                     detail={"criteria": _criteria_for_audit(criteria), "reason": "below_threshold"})
        raise
    audit_record(actor=user, action="quote.request", obj=dataset, ip=ip,
                 detail={"criteria": quote.criteria, "studies": quote.study_count})
    return quote


def _criteria_for_audit(criteria: Any) -> Any:
    try:
        return cohort_criteria(cohort_from(criteria or {}))
    except ApplicationError:
        return {}


@transaction.atomic
def order_place(
    *,
    buyer: User,
    dataset: Dataset,
    criteria: Any,
    accept_agreement: bool,
    dua_template: DuaTemplate,
    expected_total: Decimal | None = None,
    ip: str | None = None,
) -> Order:
    """Create an order for the cohort's studies of this dataset and its contract (awaiting
    an admin).

    `expected_total` is the price the buyer saw; if the price changed meanwhile the order is
    refused rather than charged differently.
    """
    if dataset.status != Dataset.Status.PUBLISHED:
        raise OrderError("This dataset is not available for ordering.", code="not_published")
    if not accept_agreement:
        raise AgreementNotAcceptedError("You must accept the data use agreement to place the order.")
    quote = order_quote(dataset=dataset, criteria=criteria)
    if quote.study_count == 0:
        raise EmptyOrderError("No studies match this selection; remove a criterion and try again.")
    # is_finite() first: comparing a signalling NaN raises InvalidOperation.
    if expected_total is not None and (not Decimal(expected_total).is_finite()
                                       or Decimal(expected_total) != quote.total.amount):
        raise OrderError("The price changed since you saw it; review the new quote.", code="price_changed")
    order = Order.objects.create(
        buyer=buyer, dataset=dataset, criteria=quote.criteria, study_count=quote.study_count,
        unit_price=quote.unit_price.amount, total=quote.total.amount, currency=quote.total.currency,
        payment_method=Order.PaymentMethod.FREE if quote.is_free else Order.PaymentMethod.INVOICE,
    )
    order.studies.set(quote.study_ids)
    Contract.objects.create(
        order=order, template=dua_template, template_version=dua_template.version, text=dua_template.text,
        accepted_by=buyer, accepted_at=timezone.now(), accepted_ip=ip,
    )
    OrderStatusChange.objects.create(order=order, old_status="", new_status=order.status, acting_user=buyer)
    audit_record(actor=buyer, action="order.place", obj=order, ip=ip, detail={
        "dataset_id": dataset.pk, "studies": quote.study_count, "total": str(quote.total.amount),
        "currency": quote.total.currency, "dua_version": dua_template.version, "criteria": quote.criteria,
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


@transaction.atomic
def order_cancel(*, order: Order, acting_user: User, reason: str, ip: str | None = None) -> Order:
    """An admin cancels an order not yet delivered, giving a reason; its delivery stops
    (failed, with the reason) and none of its files is ever served. Orders are never
    deleted: cancelling is the way out."""
    reason = reason.strip()
    if not reason:
        raise OrderError("Give a reason when cancelling an order.", code="reason_required")
    before = Order.objects.select_for_update().get(pk=order.pk).status
    locked = order_transition(order=order, to=Order.Status.CANCELLED, acting_user=acting_user, reason=reason)
    if before != Order.Status.CANCELLED:
        audit_record(actor=acting_user, action="order.cancel", obj=locked, ip=ip,
                     detail={"from": before, "reason": reason})
        # Against the import direction, like contract_decide: the cancellation and the
        # stopped delivery are one transaction.
        from workspaces.services import delivery_stop

        delivery_stop(order=locked, reason=f"Order cancelled: {reason}")
    return locked
