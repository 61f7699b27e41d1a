"""Ordering pages: quote with filters, accept the agreement, confirm; the buyer's orders."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from catalog.disclosure import BelowThresholdError
from catalog.search.criteria import InvalidQueryError, cohort_criteria, cohort_from, describe
from catalog.selectors import (
    access_dataset,
    dataset_study_breakdown,
    datasets_for_provider_user,
)
from marketplace.exceptions import ApplicationError
from marketplace.guards import require_verified_email
from marketplace.input_guard import amount_from
from marketplace.ratelimit import RateLimitedError
from marketplace.services import client_ip
from marketplace.selectors import provider_organizations_for_user
from orders.selectors import (
    access_order,
    active_dua_template,
    orders_for_buyer,
    revenue_for_provider_user,
    sales_for_provider_user,
)
from orders.services import order_place, quote_for_buyer


CRITERIA_ERRORS = (InvalidQueryError, BelowThresholdError, RateLimitedError)


@login_required
def order_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """The quote for a cohort's studies of one dataset: every criterion in words (each can
    be removed), the price, the agreement. The cohort travels whole in the URL and form."""
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    data = request.POST if request.method == "POST" else request.GET
    dua = active_dua_template()
    error, status, quote, retry_after = "", 200, None, None
    criteria: dict[str, list[str]] = {}
    try:
        criteria = cohort_criteria(cohort_from({k: v for k, v in data.lists()
                                                if k not in ("csrfmiddlewaretoken", "accept", "expected_total")}))
        quote = quote_for_buyer(user=request.user, dataset=dataset, criteria=criteria, ip=client_ip(request))
    except CRITERIA_ERRORS as exc:
        error, status = exc.message, exc.status
        retry_after = exc.extra.get("retry_after")
    if dua is None:
        error = "Ordering is unavailable: no data use agreement is configured. Please contact the marketplace."
    if request.method == "POST" and not error:
        try:
            require_verified_email(user=request.user)
            # The price the buyer saw; refused when missing or unreadable, never skipped.
            expected = amount_from(request.POST.get("expected_total", ""), field="expected_total")
            order = order_place(buyer=request.user, dataset=dataset, criteria=criteria,
                                accept_agreement=request.POST.get("accept") == "on", dua_template=dua,
                                expected_total=expected, ip=client_ip(request))
        except ApplicationError as exc:
            error, status = exc.message, exc.status
        else:
            messages.success(request, "Order placed. An administrator reviews the agreement before delivery.")
            return redirect("order_detail", order_id=order.pk)
    breakdown = dataset_study_breakdown(dataset=dataset, user=request.user)
    checkboxes = {(facet["key"], row["value"]) for facet in breakdown for row in facet["rows"] if row["orderable"]}
    context = {
        "dataset": dataset, "quote": quote, "dua": dua, "error": error, "criteria": criteria,
        "words": describe(cohort_from(criteria)), "breakdown": breakdown,
        # Criteria without a checkbox here (other kinds, or values this dataset lacks) travel as
        # hidden fields, so "Update price" keeps them.
        "carried": [(k, v) for k, vs in criteria.items() for v in vs if (k, v) not in checkboxes],
    }
    response = render(request, "orders/order_new.html", context, status=status if error else 200)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@login_required
def order_list(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/order_list.html", {"orders": orders_for_buyer(user=request.user)})


@login_required
def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = access_order(user=request.user, order_id=order_id)
    return render(request, "orders/order_detail.html",
                  {"order": order, "words": describe(cohort_from(order.criteria))})


@login_required
def provider_dashboard(request: HttpRequest) -> HttpResponse:
    """The provider's datasets, sales and revenue (here because it reads orders)."""
    organizations = provider_organizations_for_user(user=request.user)
    if not organizations.exists():
        messages.info(request, "Only members of a provider organization can publish data.")
        return redirect("home")
    context = {
        "organizations": organizations,
        "datasets": datasets_for_provider_user(user=request.user).order_by("-created"),
        "sales": sales_for_provider_user(user=request.user)[:20],
        "revenue": revenue_for_provider_user(user=request.user),
    }
    return render(request, "orders/provider_dashboard.html", context)
