"""Prices for cohorts: one line per dataset from its pricing plan (orders/pricing.py), and
the cart's lines together in one currency.

A line takes the dataset's studies exactly as the cohort builder counts them. Flat and
subscription plans sell the whole dataset, so their line covers all of it whatever the
filter. Studies the buyer's organization already holds under a live licence are left out
unless the buyer includes them knowingly."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from catalog.disclosure import BelowThresholdError, effective_threshold, require_disclosable
from catalog.models import Dataset, Study
from catalog.search.criteria import cohort_criteria, cohort_from, describe
from catalog.search.service import cohort_study_ids, dataset_study_count
from marketplace.exceptions import ApplicationError
from marketplace.models import Organization, User
from marketplace.ratelimit import rate_limit_hit, requester_key
from marketplace.services import audit_record
from orders.currency import format_money
from orders.models import Offer, Order, OrderLine
from orders.pricing import LinePrice, PlanTerms, price_line

WHOLE_DATASET_PLANS = {"flat", "subscription"}


@dataclass(frozen=True)
class LineQuote:
    dataset: Dataset
    criteria: dict[str, list[str]]  # the cohort's whole definition (catalog/search/criteria.py)
    price: LinePrice
    study_ids: tuple[int, ...] = field(default=(), repr=False)
    image_count: int = 0
    held_excluded: int = 0  # studies left out: the buyer's organization holds them already
    covers_whole_dataset: bool = False  # flat or subscription: the plan sells all of it
    offer: Offer | None = None  # priced at this accepted offer instead of the plan (orders/offers.py)

    @property
    def study_count(self) -> int:
        return len(self.study_ids)

    @property
    def currency(self) -> str:
        return self.price.currency

    @property
    def total_minor(self) -> int:
        return self.price.total_minor

    @property
    def total_display(self) -> str:
        return format_money(self.price.total_minor, self.price.currency)

    @property
    def criteria_words(self) -> list[dict[str, str]]:
        return describe(cohort_from(self.criteria))

    @property
    def offer_terms(self) -> list[tuple[str, str]]:
        """The accepted offer's licence terms in words (none for a line at the plan)."""
        from orders.offers import offer_terms

        return offer_terms(self.offer).describe() if self.offer is not None else []


@dataclass(frozen=True)
class CartProblem:
    dataset_id: int
    title: str
    message: str
    all_held: bool = False  # every study is already held: the buyer may include them


@dataclass(frozen=True)
class CartQuote:
    lines: tuple[LineQuote, ...]
    # Items that cannot be priced now, each with the reason.
    problems: tuple[CartProblem, ...] = ()

    @property
    def currencies(self) -> list[str]:
        return sorted({line.currency for line in self.lines})

    @property
    def mixed_currencies(self) -> bool:
        return len(self.currencies) > 1

    @property
    def currency(self) -> str | None:
        return self.currencies[0] if len(self.currencies) == 1 else None

    @property
    def total_minor(self) -> int:
        if self.mixed_currencies:
            raise MixedCurrenciesError(self.currencies)
        return sum(line.total_minor for line in self.lines)

    @property
    def total_display(self) -> str:
        return format_money(self.total_minor, self.currency) if self.currency else ""

    @property
    def is_free(self) -> bool:
        return not self.mixed_currencies and self.total_minor == 0


class MixedCurrenciesError(ApplicationError):
    code = "mixed_currencies"

    def __init__(self, currencies: list[str]) -> None:
        super().__init__(
            f"One order is paid in one currency, and this cart holds {', '.join(currencies)}. "
            "Remove the datasets in the other currency and order them separately.")


def buyer_organization(user: User) -> Organization | None:
    """The buyer organization the user orders for (the first one they belong to)."""
    return (Organization.objects.filter(kind=Organization.Kind.BUYER, memberships__user=user)
            .order_by("memberships__created", "pk").first())


def held_study_ids(*, buyer: User, dataset_id: int) -> set[int]:
    """Studies of this dataset the buyer (or their organization) holds under a live licence:
    lines of orders not cancelled, paid, free or on approved credit, with access that has
    not ended."""
    organization = buyer_organization(buyer)
    who = Q(order__buyer=buyer)
    if organization is not None:
        who |= Q(order__buyer_organization=organization)
    paid = (Q(order__payment_status__in=[Order.PaymentStatus.PAID, Order.PaymentStatus.NOT_REQUIRED,
                                        Order.PaymentStatus.PARTIALLY_REFUNDED])
            | Q(order__credit_approved_at__isnull=False))
    live = Q(licence_ends__isnull=True) | Q(licence_ends__gt=timezone.now())
    lines = OrderLine.objects.filter(who, paid, live, dataset_id=dataset_id, access_ended_at__isnull=True,
                                     order__status__in=[Order.Status.OPEN, Order.Status.COMPLETED])
    return set(lines.values_list("studies", flat=True)) - {None}


def line_quote(*, dataset: Dataset, criteria: Any = None, buyer: User | None = None,
               include_held: bool = False, offer: Offer | None = None) -> LineQuote:
    """The price of a cohort's studies of one dataset (at ``offer``'s negotiated price
    when given, instead of the plan's).

    Refused (BelowThresholdError) for 1 to threshold-1 studies (the price would give the
    count), and where the selection leaves out 1 to threshold-1 of the dataset's studies
    (the dataset's total is shown: the difference would give the count left out)."""
    query = cohort_from(criteria or {})
    terms = PlanTerms.from_dataset(dataset)
    whole_plan = terms.model in WHOLE_DATASET_PLANS
    if whole_plan:
        query = cohort_from({})
    ids = cohort_study_ids(query=query, dataset_id=dataset.pk)
    whole_dataset = not cohort_criteria(query)
    whole = len(ids) if whole_dataset else dataset_study_count(dataset_id=dataset.pk)
    require_disclosable(count=len(ids), threshold=effective_threshold(dataset.disclosure_threshold),
                        whole_dataset=whole_dataset, dataset_total=whole)
    held_excluded = 0
    if buyer is not None and not include_held and not whole_plan:
        held = held_study_ids(buyer=buyer, dataset_id=dataset.pk)
        kept = [i for i in ids if i not in held]
        held_excluded, ids = len(ids) - len(kept), kept
    images = (Study.objects.filter(pk__in=ids).aggregate(n=Sum("instance_count"))["n"] or 0) if ids else 0
    organization = buyer_organization(buyer) if buyer is not None else None
    price = price_line(terms, study_count=len(ids), image_count=images,
                       academic=bool(organization and organization.is_verified_academic))
    if offer is not None:
        from orders.offers import offer_price

        price = offer_price(offer)
    return LineQuote(dataset=dataset, criteria=cohort_criteria(query), price=price, study_ids=tuple(ids),
                     image_count=images, held_excluded=held_excluded, covers_whole_dataset=whole_plan, offer=offer)


def quote_for_buyer(*, user: User, dataset: Dataset, criteria: Any = None, include_held: bool = False,
                    ip: str | None = None) -> LineQuote:
    """A quote asked for by a person: within their QUOTE_RATE, and audited (quotes of
    nested selections could be differenced; the trail shows who tried)."""
    rate_limit_hit(scope="quote", key=requester_key(user=user, ip=ip), rate=settings.QUOTE_RATE, what="quotes")
    try:
        quote = line_quote(dataset=dataset, criteria=criteria, buyer=user, include_held=include_held)
    except BelowThresholdError:
        audit_record(actor=user, action="quote.refused", obj=dataset, ip=ip,
                     detail={"criteria": _criteria_for_audit(criteria), "reason": "below_threshold"})
        raise
    audit_record(actor=user, action="quote.request", obj=dataset, ip=ip,
                 detail={"criteria": quote.criteria, "studies": quote.study_count,
                         "total_minor": quote.total_minor, "currency": quote.currency})
    return quote


def _criteria_for_audit(criteria: Any) -> Any:
    try:
        return cohort_criteria(cohort_from(criteria or {}))
    except ApplicationError:
        return {}
