"""Saved searches (and the notices when new data matches them) and the data-request board."""
from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from catalog.disclosure import rule_for_dataset
from catalog.exceptions import CatalogError
from catalog.facets import echo
from catalog.models import DataRequest, DataRequestResponse, Dataset, SavedSearch
from catalog.search import search_backend
from catalog.search.query import STUDIES, query_from
from marketplace.input_guard import amount_from
from marketplace.models import Membership, User, WebhookEndpoint
from marketplace.services import audit_record, notification_send
from marketplace.webhooks import webhook_event_emit
from orders.currency import ACCEPTED_CODES

MAX_SAVED_PER_USER = 100


def _criteria(params: Any) -> dict[str, Any]:
    """Check query parameters as the cohort builder would, keep them in canonical form."""
    return query_from(params, scope=STUDIES).as_params()  # an InvalidQueryError names the problem


def cohort_url(criteria: dict[str, Any]) -> str:
    return f"{reverse('cohort_builder')}?{urlencode(criteria, doseq=True)}"


def saved_search_create(*, user: User, name: str, params: Any, notify: bool = True) -> SavedSearch:
    name = " ".join((name or "").split())[:120]
    if not name:
        raise CatalogError("Give the search a name.", code="name_required")
    if SavedSearch.objects.filter(user=user).count() >= MAX_SAVED_PER_USER:
        raise CatalogError(f"At most {MAX_SAVED_PER_USER} saved searches; delete one first.", code="too_many")
    return SavedSearch.objects.create(user=user, name=name, criteria=_criteria(params), notify=notify)


def saved_search_delete(*, user: User, saved_id: int) -> None:
    SavedSearch.objects.filter(user=user, pk=saved_id).delete()


def saved_searches_notify(*, dataset_id: int) -> int:
    """After a dataset is published: tell everyone whose saved search it matches (counts
    go through the disclosure rule for each recipient). Returns the
    number of notices sent."""
    dataset = Dataset.objects.select_related("provider").get(pk=dataset_id)
    if dataset.status != Dataset.Status.PUBLISHED:
        return 0
    backend = search_backend()
    sent = 0
    for saved in SavedSearch.objects.filter(notify=True).select_related("user"):
        query = query_from(saved.criteria, scope=STUDIES)
        query.dataset_ids = [dataset_id]
        datasets = backend.datasets(query)
        if dataset_id not in datasets or not backend.passes(datasets[dataset_id], query):
            continue
        studies = backend.counts(query, datasets, facets=False)["dataset"].get(str(dataset_id), 0)
        if not studies:
            continue
        rule = rule_for_dataset(user=saved.user, dataset=dataset)
        notification_send(
            user=saved.user,
            message=f"New data for your saved search “{saved.name}”: "
                    f"{rule.describe(rule.count(studies))} in “{dataset.title}”.",
            url=cohort_url(saved.criteria))
        _saved_search_webhooks(saved, dataset)
        sent += 1
    return sent


def _saved_search_webhooks(saved: SavedSearch, dataset: Dataset) -> None:
    """``saved_search.new_data`` for the endpoints of the user's organizations: which
    datasets newly match, by id and title (no study counts: those pass the disclosure rule
    per reader, and the webhook's reader is a machine)."""
    site = settings.SITE_URL.rstrip("/")
    webhook_event_emit(
        organization_ids=list(Membership.objects.filter(user=saved.user).values_list("organization_id", flat=True)),
        event_type=WebhookEndpoint.Event.SAVED_SEARCH_NEW_DATA,
        data={"saved_search": {"id": saved.pk, "name": saved.name, "url": f"{site}{cohort_url(saved.criteria)}"},
              "datasets": [{"id": dataset.pk, "title": dataset.title,
                            "url": f"{site}{reverse('dataset_detail', args=[dataset.pk])}"}]})


# --- data requests ----------------------------------------------------------------------

def data_request_create(*, requester: User, title: str, description: str, params: Any = None) -> DataRequest:
    title, description = " ".join((title or "").split())[:200], (description or "").strip()[:5000]
    if not title or not description:
        raise CatalogError("A data request needs a title and a description of the data you need.",
                           code="incomplete_request")
    request = DataRequest.objects.create(requester=requester, title=title, description=description,
                                         criteria=_criteria(params or {}))
    audit_record(actor=requester, action="data_request.create", obj=request)
    return request


@transaction.atomic
def data_request_respond(*, data_request: DataRequest, responder: User, provider_id: int,
                         dataset_id: int | None = None, offer: str = "",
                         price_per_study: str | Decimal | None = None, currency: str = "") -> DataRequestResponse:
    """A provider answers with one of its datasets, or an offer (what it could supply). A price
    is in the dataset's currency, or for an offer in the currency chosen (one the payments accept)."""
    if data_request.status != DataRequest.Status.OPEN:
        raise CatalogError("This request is closed.", code="request_closed")
    if not Membership.objects.filter(user=responder, organization_id=provider_id,
                                     organization__kind="provider").exists():
        raise CatalogError("Only members of a provider organization can answer data requests.",
                           code="not_provider")
    dataset = None
    if dataset_id:
        dataset = Dataset.objects.filter(pk=dataset_id, provider_id=provider_id).first()
        if dataset is None:
            raise CatalogError("Choose one of your own datasets.", code="bad_dataset")
    offer = (offer or "").strip()[:5000]
    if dataset is None and not offer:
        raise CatalogError("Link one of your datasets or describe your offer.", code="empty_response")
    # Whole cents from 0 to numeric(12,2)'s limit, or an InvalidInputError naming the field.
    price = None if price_per_study in (None, "") else amount_from(price_per_study, field="price_per_study")
    if price is None:
        currency = ""
    elif dataset is not None:
        currency = dataset.currency
    elif currency and currency not in ACCEPTED_CODES:  # none given: shown as "currency not stated"
        raise CatalogError(f"Choose the currency of the price per study ({echo(currency)} is not one the "
                           "payments accept).", code="bad_currency")
    response = DataRequestResponse.objects.create(
        request=data_request, provider_id=provider_id, responder=responder, dataset=dataset,
        offer=offer, price_per_study=price, currency=currency)
    audit_record(actor=responder, action="data_request.respond", obj=data_request,
                 detail={"dataset": dataset.pk if dataset else None})
    provider_name = response.provider.name
    transaction.on_commit(lambda: notification_send(
        user=data_request.requester,
        message=f"{provider_name} answered your data request “{data_request.title}”.",
        url=reverse("data_request_detail", args=[data_request.pk])))
    return response


def data_request_close(*, data_request: DataRequest, user: User) -> DataRequest:
    if data_request.requester_id != user.pk:
        raise CatalogError("Only the researcher who asked can close this request.", code="not_yours")
    DataRequest.objects.filter(pk=data_request.pk).update(status=DataRequest.Status.CLOSED)
    data_request.status = DataRequest.Status.CLOSED
    return data_request
