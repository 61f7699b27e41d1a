"""Saved searches and the data-request board (thin views over catalog/discovery/services.py)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.discovery.services import (
    cohort_url,
    data_request_close,
    data_request_create,
    data_request_respond,
    saved_search_create,
    saved_search_delete,
)
from catalog.exceptions import CatalogError
from catalog.models import DataRequest, Dataset
from marketplace.exceptions import ApplicationError
from marketplace.models import Organization
from orders.currency import ACCEPTED_CURRENCIES


@login_required
def saved_searches(request: HttpRequest) -> HttpResponse:
    rows = [(saved, cohort_url(saved.criteria)) for saved in request.user.saved_searches.all()]
    return render(request, "catalog/saved_searches.html", {"rows": rows})


@login_required
@require_POST
def saved_search_new(request: HttpRequest) -> HttpResponse:
    params = request.POST.copy()
    name = params.pop("name", [""])[0]
    notify = params.pop("notify", [""])[0] == "on"
    params.pop("csrfmiddlewaretoken", None)
    try:
        saved = saved_search_create(user=request.user, name=name, params=params, notify=notify)
    except CatalogError as exc:
        messages.error(request, exc.message)
        return redirect("saved_searches")
    messages.success(request, f"Saved “{saved.name}”."
                     + (" You will be told when new data matches it." if saved.notify else ""))
    return redirect("saved_searches")


@login_required
@require_POST
def saved_search_remove(request: HttpRequest, saved_id: int) -> HttpResponse:
    saved_search_delete(user=request.user, saved_id=saved_id)
    return redirect("saved_searches")


@login_required
def data_requests(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        try:
            created = data_request_create(requester=request.user, title=request.POST.get("title", ""),
                                          description=request.POST.get("description", ""))
        except CatalogError as exc:
            error = exc.message
        else:
            messages.success(request, "Your request is on the board; providers will answer here.")
            return redirect("data_request_detail", request_id=created.pk)
    open_requests = DataRequest.objects.filter(status=DataRequest.Status.OPEN).select_related("requester")
    return render(request, "catalog/data_requests.html",
                  {"requests": open_requests[:100], "error": error, "form": request.POST},
                  status=400 if error else 200)


@login_required
def data_request_detail(request: HttpRequest, request_id: int) -> HttpResponse:
    data_request = get_object_or_404(DataRequest, pk=request_id)
    providers = list(Organization.objects.filter(memberships__user=request.user, kind="provider"))
    error = ""
    if request.method == "POST":
        try:
            if request.POST.get("action") == "close":
                data_request_close(data_request=data_request, user=request.user)
                messages.success(request, "Request closed.")
            else:
                provider_id = int(request.POST.get("provider") or (providers[0].pk if providers else 0))
                dataset_id = int(request.POST["dataset"]) if request.POST.get("dataset") else None
                data_request_respond(data_request=data_request, responder=request.user,
                                     provider_id=provider_id, dataset_id=dataset_id,
                                     offer=request.POST.get("offer", ""),
                                     price_per_study=request.POST.get("price_per_study") or None,
                                     currency=request.POST.get("currency", ""))
                messages.success(request, "Answer sent to the researcher.")
            return redirect("data_request_detail", request_id=data_request.pk)
        except (ApplicationError, ValueError) as exc:
            error = getattr(exc, "message", "Choose a dataset from the list.")
    own_datasets = Dataset.objects.filter(provider__in=providers).order_by("title") if providers else []
    context = {"data_request": data_request, "responses": data_request.responses.select_related("provider", "dataset"),
               "providers": providers, "own_datasets": own_datasets, "error": error,
               "currencies": ACCEPTED_CURRENCIES}
    return render(request, "catalog/data_request_detail.html", context, status=400 if error else 200)
