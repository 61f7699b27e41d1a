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
        counts = dict(
            _apply_filters(base, params.filters, skip=name)
            .annotate(value=value)
            .values_list("value").annotate(count=Count("id", distinct=True)).order_by()
        )
        counts = facet.with_selected(counts, params.filters.get(name, []))
        facets[name] = [_facet_row(name, value, counts[value], params) for value in facet.order(counts)]
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


# ---- matching studies and patients of the catalog page -----------------------------------

def catalog_study_counts(*, params: Query, datasets: QuerySet[Dataset], user: User | None) -> dict[str, Any]:
    """How many studies and patients of the listed datasets match the page's filters and
    keywords (the study search, as the cohort builder counts them), in total and per
    dataset, as shown to the user: {"studies", "patients", "per_dataset": {id: studies}}.

    One answer under one rule (catalog/disclosure.py). The cards also show each dataset's
    own total, so a dataset's matching count is hidden where that total minus it is small,
    or where the total itself is hidden; and the page's totals are hidden where they and
    the shown numbers would give a hidden one."""
    from dataclasses import replace

    from catalog.disclosure import SUPPRESSED, is_shown, rule_for
    from catalog.search import search_backend
    from catalog.search.service import study_matches

    listed = {d["pk"]: d for d in datasets.values("pk", "provider_id", "disclosure_threshold",
                                                     "study_count", "patient_count")}
    rule = rule_for(user=user, datasets=[(d["provider_id"], d["disclosure_threshold"]) for d in listed.values()])
    if not listed:
        return {"studies": 0, "patients": 0, "per_dataset": {}, "exact": rule.exact, "threshold": rule.threshold}
    backend = search_backend()
    query = replace(params, dataset_ids=sorted(listed), sort="relevance")
    matches = study_matches(query, backend, facets=False)
    per_dataset = matches.per_dataset()
    cells = {i: per_dataset.get(i, 0) for i in listed}
    patients = backend.patients(query, [i for i, n in cells.items() if n])
    # A dataset's own total is on its card: total minus a shown cell must not give a small count.
    own = {i: rule_for(user=user, datasets=[(d["provider_id"], d["disclosure_threshold"])]) for i, d in listed.items()}
    force = {i for i, n in cells.items()
             if rule.hides(listed[i]["study_count"] - n) or own[i].hides(listed[i]["study_count"])}
    shown = rule.partition(cells, force=force)
    total, total_patients = sum(cells.values()), sum(patients.values())
    hidden = [i for i, n in shown.items() if not is_shown(n)]
    # Without filters or keywords a hidden cell is its dataset's total: known where that is shown.
    unknown = [i for i in hidden if params.filters or params.q or own[i].hides(listed[i]["study_count"])]
    derivable = bool(unknown) and (len(unknown) < 2 or sum(cells[i] for i in unknown) < rule.threshold)
    everything = sum(d["study_count"] for d in listed.values())
    everyone = sum(d["patient_count"] for d in listed.values())
    hide_total = rule.hides(total) or rule.hides(everything - total) or derivable
    # Without filters the patients add up to the cards' own patient counts: none may be hidden.
    small_card = not (params.filters or params.q) and any(own[i].hides(d["patient_count"]) for i, d in listed.items())
    hide_patients = hide_total or small_card or rule.hides(total_patients) or rule.hides(everyone - total_patients)
    return {"studies": SUPPRESSED if hide_total else total,
            "patients": SUPPRESSED if hide_patients else total_patients,
            "per_dataset": shown, "exact": rule.exact, "threshold": rule.threshold}
