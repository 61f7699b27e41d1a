"""Catalog reads: search with facet counts, study filters, permission-checking fetches."""
from __future__ import annotations

from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import Count, F, Func, Q, QuerySet

from catalog.datasets.grants import datasets_managed_by
from catalog.facets import BREAKDOWN_FACETS, DATASET_SEARCH_FACETS, FACETS
from catalog.models import Dataset, Study
from catalog.search.query import Query
from marketplace.exceptions import NotFoundError
from marketplace.models import User

# Staff with this permission (or superusers) see every dataset and count exactly.
ALL_DATASETS_PERMISSION = "catalog.view_dataset"


def _apply_filters(qs: QuerySet[Dataset], filters: dict[str, list[str]], skip: str | None = None) -> QuerySet[Dataset]:
    for name, values in filters.items():
        if name == skip:
            continue
        facet = DATASET_SEARCH_FACETS[name]
        lookup = "overlap" if facet.dataset_field_is_list else "in"
        qs = qs.filter(**{f"{facet.dataset_field}__{lookup}": values})
    return qs


def published_datasets() -> QuerySet[Dataset]:
    return Dataset.objects.filter(status=Dataset.Status.PUBLISHED).select_related("provider")


def dataset_search(*, params: Query) -> QuerySet[Dataset]:
    qs = _apply_filters(published_datasets(), params.filters)
    if params.q:
        query = SearchQuery(params.q, search_type="websearch", config="english")
        qs = qs.filter(search_vector=query).annotate(rank=SearchRank(F("search_vector"), query))
    order = {
        "relevance": ["-rank", "-published_at"] if params.q else ["-published_at"],
        "newest": ["-published_at"],
        "price": ["price_per_study"],
        "-price": ["-price_per_study"],
        "size": ["-study_count"],
    }[params.sort]
    return qs.order_by(*order, "-id")


class _Unnest(Func):
    function = "unnest"


def dataset_facets(*, params: Query) -> dict[str, list[dict[str, Any]]]:
    """Counts of matching published datasets per facet value.

    Each facet is counted with every other filter applied but its own, so a person can
    see how many datasets each alternative value would give.
    """
    base = published_datasets()
    if params.q:
        base = base.filter(search_vector=SearchQuery(params.q, search_type="websearch", config="english"))
    facets: dict[str, list[dict[str, Any]]] = {}
    for name, facet in DATASET_SEARCH_FACETS.items():
        value = _Unnest(F(facet.dataset_field)) if facet.dataset_field_is_list else F(facet.dataset_field)
        rows = list(
            _apply_filters(base, params.filters, skip=name)
            .annotate(value=value)
            .values("value").annotate(count=Count("id", distinct=True)).order_by("-count", "value")
        )
        if facet.ordered:  # in the vocabulary's order (age bands by age)
            rows.sort(key=lambda r: facet.sort_key(r["value"]))
        facets[name] = [_facet_row(name, r["value"], r["count"], params) for r in rows]
    return facets


def _facet_row(name: str, value: str, count: int, params: Query) -> dict[str, Any]:
    return {"value": value, "label": FACETS[name].value_label(value), "count": count,
            "selected": value in params.filters.get(name, [])}


def access_dataset(*, user: User, dataset_id: int) -> Dataset:
    """A published dataset, or any dataset of the user's own provider organization.

    Raises the same NotFoundError for "does not exist" and "not visible to you".
    """
    qs = Dataset.objects.select_related("provider")
    visible = Q(status=Dataset.Status.PUBLISHED)
    if user.is_authenticated:
        visible |= Q(pk__in=datasets_managed_by(user).values("pk"))
        # Not the bare is_staff flag: a staff account sees other providers' drafts only
        # with the permission that shows them in the admin too (superusers have it).
        if user.has_perm(ALL_DATASETS_PERMISSION):
            visible = Q()
    dataset = qs.filter(visible, pk=dataset_id).distinct().first()
    if dataset is None:
        raise NotFoundError("Dataset not found.")
    return dataset


def access_dataset_for_write(*, user: User, dataset_id: int) -> Dataset:
    """A dataset the user may edit and upload into: granted to them (their provider organization)."""
    dataset = datasets_managed_by(user).select_related("provider").filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFoundError("Dataset not found.")
    return dataset


def datasets_for_provider_user(*, user: User) -> QuerySet[Dataset]:
    return datasets_managed_by(user).select_related("provider")


# ---- study-level breakdown of one dataset (dataset and order pages) --------------------

def dataset_study_breakdown(*, dataset: Dataset, user: User | None) -> list[dict[str, Any]]:
    """Studies per value of each study filter, for the dataset and order pages, as shown to
    the user (disclosure rule; "not recorded" is a cell too, or the others would give it).

    [{"key": "sex", "label": "Sex", "rows": [{"value": "F", "label": "Female", "count": 40}, ...]}, ...]
    """
    from catalog.disclosure import rule_for_dataset, shown_rows

    rule = rule_for_dataset(user=user, dataset=dataset)
    studies = Study.objects.filter(dataset=dataset, instance_count__gt=0)
    out: list[dict[str, Any]] = []
    for key, facet in BREAKDOWN_FACETS.items():
        column = facet.column
        counts = dict(studies.order_by(column).values_list(column).annotate(n=Count("id")))
        shown = rule.partition(counts)
        rows = [{"value": value, "label": facet.value_label(value), "count": shown[value], "orderable": bool(value)}
                for value in sorted(counts, key=facet.sort_key)]
        out.append({"key": key, "label": facet.label, "rows": shown_rows(rows)})
    return out
