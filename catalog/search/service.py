"""What the pages and the API show: facets, study pages and cohorts, with small-cell
suppression for anyone without access to the data behind a count."""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from catalog.search.dimensions import (
    DATASET_LEVEL, STUDY_FACETS, SUPPRESSION_THRESHOLD, InvalidQueryError, StudyQuery,
)
from catalog.search import search_backend
from catalog.search.postgres import DatasetInfo, PostgresSearch, condition_label, dataset_values
from marketplace.models import Membership, User

MIX_DIMENSIONS = ["age_band", "sex", "ethnicity", "manufacturer"]
SUPPRESSED = f"<{SUPPRESSION_THRESHOLD}"


def accessible_provider_ids(user: User | None) -> set[int] | None:
    """Providers whose exact counts the user may see; None: all (staff)."""
    if user is None or not user.is_authenticated:
        return set()
    if user.is_staff:
        return None
    return set(Membership.objects.filter(user=user).values_list("organization_id", flat=True))


def _shown(count: int, exact: bool) -> int | str:
    """A count as shown: counts of 1..threshold-1 hide behind "<10" without access."""
    if exact or count == 0 or count >= SUPPRESSION_THRESHOLD:
        return count
    return SUPPRESSED


def _exact(providers: set[int] | None, infos: list[DatasetInfo]) -> bool:
    return providers is None or all(info.provider_id in providers for info in infos)


def _rows(name: str, counts: dict[str, int], selected: list[str], exact: bool) -> list[dict[str, Any]]:
    facet = STUDY_FACETS.get(name)
    labels = facet.labels if facet else {}
    rows = []
    for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        label = condition_label(value) if name == "condition" else labels.get(value, value or "Unknown")
        rows.append({"value": value, "label": label, "count": _shown(n, exact),
                     "selected": value in selected})
    return rows


@dataclass(frozen=True)
class Matches:
    """The datasets a query may reach and the backend's exact counts for it: computed
    once per request, shared by the facets and the cohort (never shown as they are)."""

    datasets: dict[int, DatasetInfo]
    counts: dict[str, dict[str, int]]  # facet -> value -> studies; "dataset" -> id -> studies


def study_matches(query: StudyQuery, backend: PostgresSearch | None = None, *,
                  facets: bool = True) -> Matches:
    backend = backend or search_backend()
    datasets = backend.datasets(query)
    return Matches(datasets, backend.counts(query, datasets, facets=facets))


def facets_and_total(*, query: StudyQuery, user: User | None,
                     backend: PostgresSearch | None = None,
                     matches: Matches | None = None) -> dict[str, Any]:
    """{"total": studies, "facets": {name: rows}, "datasets": {id: studies}}."""
    backend = backend or search_backend()
    matches = matches or study_matches(query, backend)
    datasets, counts = matches.datasets, matches.counts
    providers = accessible_provider_ids(user)
    per_dataset = {int(k): v for k, v in counts["dataset"].items()}
    chosen = {i: n for i, n in per_dataset.items() if backend.passes(datasets[i], query)}
    exact = _exact(providers, [datasets[i] for i in chosen])
    facets = {name: _rows(name, counts[name], query.filters.get(name, []), exact)
              for name in STUDY_FACETS}
    for name in DATASET_LEVEL:
        tally: dict[str, int] = {}
        contributing: list[DatasetInfo] = []
        for dataset_id, n in per_dataset.items():
            info = datasets[dataset_id]
            if not backend.passes(info, query, skip=name):
                continue
            contributing.append(info)
            for value in dataset_values(info, name):
                tally[value] = tally.get(value, 0) + n
        facets[name] = _rows(name, tally, query.filters.get(name, []), _exact(providers, contributing))
    total = sum(chosen.values())
    return {"total": _shown(total, exact), "facets": facets,
            "datasets": {i: _shown(n, _exact(providers, [datasets[i]])) for i, n in chosen.items()}}


STUDY_PAGE_SIZE = 25
MAX_STUDY_PAGE = 400  # deep pages beyond 10,000 rows: narrow the search instead


def study_page(raw: str | None) -> int:
    """The page number asked for; a clear error for anything else."""
    try:
        page = int(raw or 1)
    except ValueError:
        page = 0
    if not 1 <= page <= MAX_STUDY_PAGE:
        raise InvalidQueryError(f"page must be a number from 1 to {MAX_STUDY_PAGE}.")
    return page


def browsable_studies(*, query: StudyQuery, user: User | None, page: int = 1,
                      backend: PostgresSearch | None = None,
                      matches: Matches | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of matching study rows, in the query's sort, and how many there are: only
    of datasets whose provider allows browsing before purchase (or of the user's own
    provider). Rows carry their dataset's title; never a patient id."""
    backend = backend or search_backend()
    datasets = matches.datasets if matches is not None else backend.datasets(query)
    providers = accessible_provider_ids(user)
    browsable = [i for i, info in datasets.items() if backend.passes(info, query) and (
        info.allow_study_browsing or providers is None or info.provider_id in providers)]
    rows, count = backend.studies(query, browsable, offset=(page - 1) * STUDY_PAGE_SIZE,
                                  limit=STUDY_PAGE_SIZE)
    for row in rows:
        row["dataset_title"] = datasets[row["dataset_id"]].title
    return rows, count


def cohort_summary(*, query: StudyQuery, user: User | None,
                   backend: PostgresSearch | None = None,
                   matches: Matches | None = None) -> dict[str, Any]:
    """Per dataset and in total: matching studies, patients and price; the demographic
    mix of the match; and which other datasets would fill its gaps."""
    backend = backend or search_backend()
    matches = matches or study_matches(query, backend, facets=False)
    datasets, counts = matches.datasets, matches.counts["dataset"]
    chosen = {int(i): n for i, n in counts.items() if backend.passes(datasets[int(i)], query)}
    ids = sorted(chosen)
    patients = backend.patients(query, ids)
    providers = accessible_provider_ids(user)
    rows, totals_by_currency, suppressed_any = [], {}, False
    for dataset_id in sorted(ids, key=lambda i: (-chosen[i], i)):
        info = datasets[dataset_id]
        exact = _exact(providers, [info])
        studies = chosen[dataset_id]
        shown = _shown(studies, exact)
        price: Decimal | None = None
        if shown != SUPPRESSED:
            price = info.price_per_study * studies
            totals_by_currency[info.currency] = totals_by_currency.get(info.currency, Decimal(0)) + price
        else:
            suppressed_any = True  # its price would tell its count
        rows.append({"dataset_id": dataset_id, "title": info.title, "provider": info.provider,
                     "studies": shown, "patients": _shown(patients.get(dataset_id, 0), exact),
                     "price_per_study": info.price_per_study, "currency": info.currency,
                     "price": price})
    exact_all = _exact(providers, [datasets[i] for i in ids])
    mix = backend.breakdown(query, ids, MIX_DIMENSIONS)
    return {
        "criteria": query.as_params(),
        "datasets": rows,
        "total_studies": _shown(sum(chosen.values()), exact_all),
        "total_patients": _shown(sum(patients.values()), exact_all),
        "total_price": [{"currency": c, "amount": a} for c, a in sorted(totals_by_currency.items())],
        "price_excludes_small_datasets": suppressed_any,
        "mix": {name: _rows(name, mix[name], [], exact_all) for name in MIX_DIMENSIONS},
        "fill_the_gap": fill_the_gap(query=query, user=user, backend=backend, mix=mix,
                                     chosen_ids=ids),
    }


def fill_the_gap(*, query: StudyQuery, user: User | None, backend: PostgresSearch,
                 mix: dict[str, dict[str, int]], chosen_ids: list[int],
                 limit: int = 5) -> list[dict[str, Any]]:
    """Datasets outside the cohort that add studies in its under-represented groups.

    A group (say age band 18-29) is under-represented when its share of the cohort is
    below half its share of everything in the catalog that meets the cohort's other
    criteria. For each such group, the other datasets that add most studies to it."""
    providers = accessible_provider_ids(user)
    everywhere = replace(query, dataset_ids=None)
    all_datasets = backend.datasets(everywhere)
    chosen = set(chosen_ids)
    others = [i for i, info in all_datasets.items() if i not in chosen and backend.passes(info, everywhere)]
    suggestions: list[dict[str, Any]] = []
    for dimension in MIX_DIMENSIONS:
        wider = replace(everywhere, filters={k: v for k, v in query.filters.items() if k != dimension})
        catalog = backend.breakdown(wider, list(all_datasets), [dimension])[dimension]
        catalog_total = sum(catalog.values()) or 1
        cohort = mix.get(dimension, {})
        cohort_total = sum(cohort.values()) or 1
        wanted = set(query.filters.get(dimension, []))
        for value, n in catalog.items():
            if not value or (wanted and value not in wanted):
                continue
            if cohort.get(value, 0) / cohort_total >= 0.5 * n / catalog_total:
                continue
            if not others:
                continue
            adds = backend.by_dataset(replace(wider, filters={**wider.filters, dimension: [value]}),
                                      others, dimension)
            best = sorted(((sum(v.values()), i) for i, v in adds.items()), reverse=True)[:limit]
            for studies, dataset_id in best:
                info = all_datasets[dataset_id]
                suggestions.append({
                    "dimension": dimension, "value": value,
                    "label": STUDY_FACETS[dimension].labels.get(value, value),
                    "cohort_share": round(cohort.get(value, 0) / cohort_total, 3),
                    "dataset_id": dataset_id, "title": info.title, "provider": info.provider,
                    "adds_studies": _shown(studies, _exact(providers, [info])),
                })
    return suggestions


def relax_suggestions(*, query: StudyQuery, user: User | None,
                      backend: PostgresSearch | None = None) -> list[dict[str, Any]]:
    """For an empty result: how many studies each active filter would give back if it
    were removed (most first), so the page can say which filter to relax."""
    backend = backend or search_backend()
    out = []
    for name in query.filters:
        wider = replace(query, filters={k: v for k, v in query.filters.items() if k != name})
        total = facets_and_total(query=wider, user=user, backend=backend)["total"]
        if total:
            out.append({"filter": name, "values": query.filters[name], "studies": total})
    if query.q:
        total = facets_and_total(query=replace(query, q=""), user=user, backend=backend)["total"]
        if total:
            out.append({"filter": "q", "values": [query.q], "studies": total})
    return sorted(out, key=lambda r: -(r["studies"] if isinstance(r["studies"], int) else 0))
