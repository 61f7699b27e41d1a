"""Ordering pages: quote with filters, accept the agreement, confirm; the buyer's orders."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from catalog.search.dimensions import STUDY_FACETS
from catalog.selectors import (
    InvalidSearchError,
    access_dataset,
    dataset_study_breakdown,
    datasets_for_provider_user,
)
from marketplace.exceptions import ApplicationError
from marketplace.services import client_ip
from marketplace.selectors import provider_organizations_for_user
from orders.selectors import (
    access_order,
    active_dua_template,
    orders_for_buyer,
    revenue_for_provider_user,
    sales_for_provider_user,
)
from orders.services import order_place, order_quote


def _criteria_from(data) -> dict[str, list[str]]:  # noqa: ANN001 - a QueryDict
    return {key: data.getlist(key) for key in STUDY_FACETS if data.getlist(key)}


@login_required
def order_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    data = request.POST if request.method == "POST" else request.GET
    criteria = _criteria_from(data)
    dua = active_dua_template()
    error = ""
    try:
        quote = order_quote(dataset=dataset, criteria=criteria)
    except InvalidSearchError as exc:
        error, quote = exc.message, order_quote(dataset=dataset)
    if dua is None:
        error = "Ordering is unavailable: no data use agreement is configured. Please contact the marketplace."
    if request.method == "POST" and not error:
        try:
            expected = Decimal(request.POST.get("expected_total", ""))
        except InvalidOperation:
            expected = None
        try:
            order = order_place(buyer=request.user, dataset=dataset, criteria=criteria,
                                accept_agreement=request.POST.get("accept") == "on", dua_template=dua,
                                expected_total=expected, ip=client_ip(request))
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Order placed. An administrator reviews the agreement before delivery.")
            return redirect("order_detail", order_id=order.pk)
    context = {"dataset": dataset, "quote": quote, "dua": dua, "error": error, "criteria": criteria,
               "breakdown": dataset_study_breakdown(dataset=dataset)}
    return render(request, "orders/order_new.html", context, status=400 if error else 200)


@login_required
def order_list(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/order_list.html", {"orders": orders_for_buyer(user=request.user)})


@login_required
def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = access_order(user=request.user, order_id=order_id)
    return render(request, "orders/order_detail.html", {"order": order})


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
