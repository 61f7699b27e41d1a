"""The buyer's cart: cohorts of one or more datasets, priced together at checkout."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from catalog.models import Dataset
from catalog.search.criteria import cohort_criteria, cohort_from
from catalog.search.service import study_matches
from marketplace.exceptions import ApplicationError
from marketplace.models import User
from marketplace.ratelimit import rate_limit_hit, requester_key
from marketplace.services import audit_record
from orders.exceptions import OrderError
from orders.models import Cart, CartItem
from orders.quotes import CartProblem, CartQuote, line_quote

MAX_CART_ITEMS = 50


def cart_for(user: User) -> Cart:
    cart, _ = Cart.objects.get_or_create(buyer=user)
    return cart


def cart_items(user: User) -> list[CartItem]:
    return list(CartItem.objects.filter(cart__buyer=user).select_related("dataset__provider", "offer__negotiation"))


@transaction.atomic
def cart_add(*, buyer: User, dataset: Dataset, criteria: Any = None, ip: str | None = None) -> CartItem:
    """Put a cohort's studies of one dataset in the cart (replacing what the cart held for
    that dataset). The cohort is checked now so a bad filter is refused at once."""
    if dataset.status != Dataset.Status.PUBLISHED:
        raise OrderError("This dataset is not available for ordering.", code="not_published")
    clean = cohort_criteria(cohort_from(criteria or {}))
    cart = Cart.objects.select_for_update().get(pk=cart_for(buyer).pk)
    if not cart.items.filter(dataset=dataset).exists() and cart.items.count() >= MAX_CART_ITEMS:
        raise OrderError(f"A cart holds at most {MAX_CART_ITEMS} datasets; check out or remove some first.",
                         code="cart_full")
    item, _ = CartItem.objects.update_or_create(cart=cart, dataset=dataset, defaults={"criteria": clean, "offer": None})
    audit_record(actor=buyer, action="cart.add", obj=dataset, ip=ip, detail={"criteria": clean})
    return item


@transaction.atomic
def cart_add_cohort(*, buyer: User, criteria: Any = None, ip: str | None = None) -> list[CartItem]:
    """Every dataset a cohort reaches, each with the cohort's definition, in one step."""
    query = cohort_from(criteria or {})
    rate_limit_hit(scope="quote", key=requester_key(user=buyer, ip=ip), rate=settings.QUOTE_RATE, what="quotes")
    dataset_ids = sorted(study_matches(query, None, facets=False).per_dataset())
    if not dataset_ids:
        raise OrderError("No studies match this cohort; remove a criterion and try again.", code="empty_order")
    datasets = Dataset.objects.filter(pk__in=dataset_ids, status=Dataset.Status.PUBLISHED)
    return [cart_add(buyer=buyer, dataset=d, criteria=criteria, ip=ip) for d in datasets]


@transaction.atomic
def cart_remove(*, buyer: User, dataset_id: int) -> None:
    CartItem.objects.filter(cart__buyer=buyer, dataset_id=dataset_id).delete()


@transaction.atomic
def cart_include_held(*, buyer: User, dataset_id: int, include: bool) -> None:
    CartItem.objects.filter(cart__buyer=buyer, dataset_id=dataset_id).update(include_held=include)


def cart_quote(*, buyer: User, items: list[CartItem] | None = None) -> CartQuote:
    """Each item priced now; items that cannot be priced (withdrawn dataset, a selection
    the disclosure rule refuses, nothing left) are reported, not dropped silently."""
    lines, problems = [], []
    for item in cart_items(buyer) if items is None else items:
        if item.dataset.status != Dataset.Status.PUBLISHED:
            problems.append(CartProblem(item.dataset_id, item.dataset.title, "This dataset is no longer available."))
            continue
        if item.offer is not None:
            from orders.offers import offer_problem

            message = offer_problem(offer=item.offer, buyer=buyer)
            if message:
                problems.append(CartProblem(item.dataset_id, item.dataset.title, message))
                continue
        try:
            quote = line_quote(dataset=item.dataset, criteria=item.criteria, buyer=buyer,
                               include_held=item.include_held, offer=item.offer)
        except ApplicationError as exc:
            problems.append(CartProblem(item.dataset_id, item.dataset.title, exc.message))
            continue
        if quote.study_count == 0:
            message = ("Your organization already holds every study of this selection."
                       if quote.held_excluded else "No studies match this selection.")
            problems.append(CartProblem(item.dataset_id, item.dataset.title, message, all_held=bool(quote.held_excluded)))
            continue
        lines.append(quote)
    return CartQuote(lines=tuple(lines), problems=tuple(problems))
