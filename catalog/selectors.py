"""Catalog reads: search with facet counts, study filters, permission-checking fetches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import Count, F, Func, Q, QuerySet

from catalog.exceptions import CatalogError
from catalog.grants import datasets_managed_by
from catalog.models import Dataset, Study
from marketplace.exceptions import NotFoundError
from marketplace.models import User

MAX_QUERY_CHARS = 200
# Staff with this permission (or superusers) see every dataset and count exactly.
ALL_DATASETS_PERMISSION = "catalog.view_dataset"

# facet name → the Dataset array field it filters (provider is filtered by name)
DATASET_FACETS: dict[str, str] = {
    "modality": "modalities",
    "body_part": "body_parts",
    "sex": "sexes",
    "age_band": "age_bands",
    "manufacturer": "manufacturers",
}
FACET_LABELS = {
    "modality": "Modality", "body_part": "Body part", "sex": "Sex", "age_band": "Age band",
    "manufacturer": "Manufacturer", "provider": "Provider",
}
SORTS = {"relevance", "newest", "price", "-price", "size"}
SEX_LABELS = {"F": "Female", "M": "Male", "O": "Other"}


class InvalidSearchError(CatalogError):
    code = "invalid_search"


@dataclass
class SearchParams:
    q: str = ""
    filters: dict[str, list[str]] = field(default_factory=dict)
    sort: str = "relevance"


def search_params_from(data: Any) -> SearchParams:
    """Parse query parameters (a QueryDict or dict of lists). Unknown facets are an error."""
    allowed = set(DATASET_FACETS) | {"provider", "q", "sort", "page", "format"}
    unknown = sorted(k for k in data.keys() if k not in allowed)
    if unknown:
        raise InvalidSearchError(f"Unknown filter: {', '.join(unknown)}. Known filters: "
                                 f"{', '.join(sorted(set(DATASET_FACETS) | {'provider'}))}.")
    q = (data.get("q") or "").strip()
    if len(q) > MAX_QUERY_CHARS:
        q = q[:MAX_QUERY_CHARS]  # long queries are cut, not refused: nothing useful is past this
    sort = data.get("sort") or "relevance"
    if sort not in SORTS:
        raise InvalidSearchError(f"Unknown sort {sort!r}; use one of {', '.join(sorted(SORTS))}.")
    getlist = data.getlist if hasattr(data, "getlist") else (lambda k: data.get(k) or [])
    filters = {}
    for name in [*DATASET_FACETS, "provider"]:
        values = [v for v in getlist(name) if v]
        if values:
            filters[name] = values
    return SearchParams(q=q, filters=filters, sort=sort)


def _apply_filters(qs: QuerySet[Dataset], filters: dict[str, list[str]], skip: str | None = None) -> QuerySet[Dataset]:
    for name, values in filters.items():
        if name == skip:
            continue
        if name == "provider":
            qs = qs.filter(provider__name__in=values)
        else:
            qs = qs.filter(**{f"{DATASET_FACETS[name]}__overlap": values})
    return qs


def published_datasets() -> QuerySet[Dataset]:
    return Dataset.objects.filter(status=Dataset.Status.PUBLISHED).select_related("provider")


def dataset_search(*, params: SearchParams) -> QuerySet[Dataset]:
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


def dataset_facets(*, params: SearchParams) -> dict[str, list[dict[str, Any]]]:
    """Counts of matching published datasets per facet value.

    Each facet is counted with every other filter applied but its own, so a person can
    see how many datasets each alternative value would give.
    """
    base = published_datasets()
    if params.q:
        base = base.filter(search_vector=SearchQuery(params.q, search_type="websearch", config="english"))
    facets: dict[str, list[dict[str, Any]]] = {}
    for name, column in DATASET_FACETS.items():
        rows = (
            _apply_filters(base, params.filters, skip=name)
            .annotate(value=_Unnest(F(column)))
            .values("value").annotate(count=Count("id", distinct=True)).order_by("-count", "value")
        )
        facets[name] = [_facet_row(name, r["value"], r["count"], params) for r in rows]
    rows = (
        _apply_filters(base, params.filters, skip="provider")
        .values(value=F("provider__name")).annotate(count=Count("id")).order_by("-count", "value")
    )
    facets["provider"] = [_facet_row("provider", r["value"], r["count"], params) for r in rows]
    return facets


def _facet_row(name: str, value: str, count: int, params: SearchParams) -> dict[str, Any]:
    label = SEX_LABELS.get(value, value) if name == "sex" else value
    return {"value": value, "label": label, "count": count, "selected": value in params.filters.get(name, [])}


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
STUDY_FILTERS = {"sex": "patient_sex", "age_band": "age_band", "body_part": "body_part",
                 "manufacturer": "manufacturer", "modality": "modalities"}


def dataset_study_breakdown(*, dataset: Dataset, user: User | None) -> list[dict[str, Any]]:
    """Studies per value of each study filter, for the dataset and order pages, as shown to
    the user (disclosure rule; "not recorded" is a cell too, or the others would give it).

    [{"key": "sex", "label": "Sex", "rows": [{"value": "F", "label": "Female", "count": 40}, ...]}, ...]
    """
    from catalog.disclosure import rule_for_dataset, shown_rows

    rule = rule_for_dataset(user=user, dataset=dataset)
    studies = Study.objects.filter(dataset=dataset, instance_count__gt=0)
    out: list[dict[str, Any]] = []
    for key in ("sex", "age_band", "body_part", "manufacturer"):
        column = STUDY_FILTERS[key]
        counts = dict(studies.order_by(column).values_list(column).annotate(n=Count("id")))
        shown = rule.partition(counts)
        rows = [{"value": value, "label": (SEX_LABELS.get(value, value) if key == "sex" else value)
                 or "Not recorded", "count": shown[value], "orderable": bool(value)}
                for value in sorted(counts)]
        out.append({"key": key, "label": FACET_LABELS[key], "rows": shown_rows(rows)})
    return out
