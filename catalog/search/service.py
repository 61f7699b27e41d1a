"""What the pages and the API show: facets, study pages and cohorts. Every count goes
through the disclosure rule (catalog/disclosure.py) for the person asking."""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from catalog.disclosure import SUPPRESSED, Rule, is_shown, rule_for, shown_rows
from catalog.exceptions import InvalidQueryError
from catalog.facets import DATASET_LEVEL, FACETS, STUDY_FACETS
from catalog.search import search_backend
from catalog.search.backend import SearchBackend
from catalog.search.postgres import DatasetInfo, dataset_values
from catalog.search.query import Query
from marketplace.models import User

MIX_DIMENSIONS = ["age_band", "sex", "ethnicity", "manufacturer"]


def _rows(name: str, counts: dict[str, int], selected: list[str], rule: Rule) -> list[dict[str, Any]]:
    facet = FACETS[name]
    counts = facet.with_selected(counts, selected)
    # The values filtered by add up to the answer's total: protected as a group too.
    shown = rule.partition(counts, within=[selected])
    rows = [{"value": value, "label": facet.value_label(value), "count": shown[value], "selected": value in selected}
            for value in facet.order(counts)]
    # Hidden rows of a count-ordered list go last (their place would bound them); a list in
    # the vocabulary's own order tells nothing by its order.
    return rows if facet.ordered else shown_rows(rows)


def answer_rule(*, user: User | None, infos: list[DatasetInfo]) -> Rule:
    """One rule for an answer about these datasets (exact only if the user is entitled to
    every one of them; the highest threshold among them)."""
    return rule_for(user=user, datasets=[(info.provider_id, info.disclosure_threshold) for info in infos])


@dataclass(frozen=True)
class Matches:
    """The datasets a query may reach and the backend's exact counts for it: computed
    once per request, shared by the facets and the cohort (never shown as they are)."""

    datasets: dict[int, DatasetInfo]
    counts: dict[str, dict[str, int]]  # facet -> value -> studies; "dataset" -> id -> studies

    def per_dataset(self) -> dict[int, int]:
        return {int(k): v for k, v in self.counts["dataset"].items() if v}


def study_matches(query: Query, backend: SearchBackend | None = None, *,
                  facets: bool = True) -> Matches:
    backend = backend or search_backend()
    datasets = backend.datasets(query)
    return Matches(datasets, backend.counts(query, datasets, facets=facets))


@dataclass(frozen=True)
class DatasetCells:
    """The matching studies per dataset of one answer, as shown to one user."""

    rule: Rule
    exact: dict[int, int]  # dataset id -> studies (datasets passing the dataset-level filters)
    shown: dict[int, int | str]


def dataset_cells(*, query: Query, user: User | None, matches: Matches,
                  backend: SearchBackend) -> DatasetCells:
    """The datasets meeting every filter: their rule covers the total, the study-level
    facets and the per-dataset counts (all counted over exactly these datasets)."""
    chosen = {i: n for i, n in matches.per_dataset().items() if backend.passes(matches.datasets[i], query)}
    rule = answer_rule(user=user, infos=[matches.datasets[i] for i in chosen])
    return DatasetCells(rule, chosen, rule.partition(chosen))


def facets_and_total(*, query: Query, user: User | None,
                     backend: SearchBackend | None = None,
                     matches: Matches | None = None) -> dict[str, Any]:
    """{"total": studies, "facets": {name: rows}, "datasets": {id: studies}}."""
    backend = backend or search_backend()
    matches = matches or study_matches(query, backend)
    datasets, counts = matches.datasets, matches.counts
    cells = dataset_cells(query=query, user=user, matches=matches, backend=backend)
    rule = cells.rule
    facets = {name: _rows(name, counts[name], query.filters.get(name, []), rule) for name in STUDY_FACETS}
    for name in DATASET_LEVEL:
        # Counted over the datasets meeting every filter but this one: their own rule.
        tally: dict[str, int] = {}
        contributing: list[DatasetInfo] = []
        for dataset_id, n in matches.per_dataset().items():
            info = datasets[dataset_id]
            if not backend.passes(info, query, skip=name):
                continue
            contributing.append(info)
            for value in dataset_values(info, name):
                tally[value] = tally.get(value, 0) + n
        facets[name] = _rows(name, tally, query.filters.get(name, []),
                             answer_rule(user=user, infos=contributing))
    return {"total": rule.count(sum(cells.exact.values())), "facets": facets, "datasets": cells.shown}


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


def browsable_studies(*, query: Query, user: User | None, page: int = 1,
                      backend: SearchBackend | None = None,
                      matches: Matches | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of matching study rows, in the query's sort, and how many there are: only
    of datasets whose provider allows browsing before purchase (or of the user's own
    provider), and only of datasets whose count of matching studies is shown to the user
    (listed rows can be counted). Rows carry their dataset's title; never a patient id."""
    backend = backend or search_backend()
    matches = matches or study_matches(query, backend, facets=False)
    datasets = matches.datasets
    cells = dataset_cells(query=query, user=user, matches=matches, backend=backend)
    entitled = cells.rule.exact
    browsable = sorted(i for i, shown in cells.shown.items() if is_shown(shown) and (
        datasets[i].allow_study_browsing or entitled))
    rows, count = backend.studies(query, browsable, offset=(page - 1) * STUDY_PAGE_SIZE,
                                  limit=STUDY_PAGE_SIZE)
    for row in rows:
        row["dataset_title"] = datasets[row["dataset_id"]].title
    if rows and not entitled:
        _hide_small_groups_on_rows(rows, query=query, user=user, backend=backend, datasets=datasets)
    return rows, count


# Attributes of a listed row that are also counts: paging through the list counts the rows
# with each value, so a value is shown only where its dataset's count of it is.
ROW_ATTRIBUTES = {"sex": "patient_sex", "age_band": "age_band", "ethnicity": "ethnicity",
                  "body_part": "body_part", "manufacturer": "manufacturer", "model": "model"}


def _hide_small_groups_on_rows(rows: list[dict[str, Any]], *, query: Query, user: User | None,
                               backend: SearchBackend, datasets: dict[int, DatasetInfo]) -> None:
    listed = sorted({row["dataset_id"] for row in rows})
    for dimension, key in ROW_ATTRIBUTES.items():
        hidden: set[tuple[int, str]] = set()
        for dataset_id, counts in backend.by_dataset(query, listed, dimension).items():
            shown = answer_rule(user=user, infos=[datasets[dataset_id]]).partition(counts)
            hidden |= {(dataset_id, value) for value, n in shown.items() if not is_shown(n)}
        for row in rows:
            if (row["dataset_id"], str(row[key] or "")) in hidden:
                row[key] = SUPPRESSED


def cohort_summary(*, query: Query, user: User | None,
                   backend: SearchBackend | None = None,
                   matches: Matches | None = None) -> dict[str, Any]:
    """Per dataset and in total: matching studies, patients and price; the demographic
    mix of the match; and which other datasets would fill its gaps."""
    backend = backend or search_backend()
    matches = matches or study_matches(query, backend, facets=False)
    datasets = matches.datasets
    cells = dataset_cells(query=query, user=user, matches=matches, backend=backend)
    rule, chosen = cells.rule, cells.exact
    ids = sorted(chosen)
    patients = backend.patients(query, ids)
    shown_patients = rule.partition({i: patients.get(i, 0) for i in ids})
    rows, totals_by_currency, suppressed_any = [], {}, False
    # Largest first; hidden rows last, by title (their place among the others would bound them).
    def order(i: int) -> tuple:
        return (0, -chosen[i], i) if is_shown(cells.shown[i]) else (1, datasets[i].title, i)

    for dataset_id in sorted(ids, key=order):
        info = datasets[dataset_id]
        shown = cells.shown[dataset_id]
        price: Decimal | None = None
        if is_shown(shown):
            price = info.price_per_study * chosen[dataset_id]
            totals_by_currency[info.currency] = totals_by_currency.get(info.currency, Decimal(0)) + price
        else:
            suppressed_any = True  # its price would tell its count
        rows.append({"dataset_id": dataset_id, "title": info.title, "provider": info.provider,
                     "studies": shown, "patients": shown_patients[dataset_id],
                     "price_per_study": info.price_per_study, "currency": info.currency,
                     "price": price})
    mix = backend.breakdown(query, ids, MIX_DIMENSIONS)
    shown_mix = {name: _rows(name, mix[name], [], rule) for name in MIX_DIMENSIONS}
    return {
        "criteria": query.as_params(),
        "threshold": rule.threshold,
        "exact": rule.exact,
        "datasets": rows,
        "total_studies": rule.count(sum(chosen.values())),
        "total_patients": rule.count(sum(patients.values())),
        "total_price": [{"currency": c, "amount": a} for c, a in sorted(totals_by_currency.items())],
        "price_excludes_small_datasets": suppressed_any,
        "mix": shown_mix,
        "fill_the_gap": fill_the_gap(query=query, user=user, backend=backend, mix=mix, shown_mix=shown_mix,
                                     chosen_ids=ids),
    }


def fill_the_gap(*, query: Query, user: User | None, backend: SearchBackend,
                 mix: dict[str, dict[str, int]], chosen_ids: list[int],
                 shown_mix: dict[str, list[dict[str, Any]]] | None = None,
                 limit: int = 5) -> list[dict[str, Any]]:
    """Datasets outside the cohort that add studies in its under-represented groups.

    A group (say age band 18-29) is under-represented when its share of the cohort is
    below half its share of everything in the catalog that meets the cohort's other
    criteria. For each such group, the other datasets that add most studies to it. A
    group's share of the cohort is given only where its count is shown (share x total
    would give a hidden count)."""
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
        shown_in_cohort = {row["value"]: row["count"] for row in (shown_mix or {}).get(dimension, [])}
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
            share_shown = shown_mix is not None and is_shown(shown_in_cohort.get(value, 0))
            for studies, dataset_id in best:
                info = all_datasets[dataset_id]
                suggestions.append({
                    "dimension": dimension, "value": value,
                    "label": STUDY_FACETS[dimension].value_label(value),
                    "cohort_share": round(cohort.get(value, 0) / cohort_total, 3) if share_shown else None,
                    "dataset_id": dataset_id, "title": info.title, "provider": info.provider,
                    "adds_studies": answer_rule(user=user, infos=[info]).count(studies),
                })
    return suggestions


def cohort_study_ids(*, query: Query, dataset_id: int,
                     backend: SearchBackend | None = None) -> list[int]:
    """The studies of one dataset a cohort counts: the same backend, filters, keywords and
    price range as the cohort builder's count (an order takes exactly these)."""
    backend = backend or search_backend()
    scoped = replace(query, dataset_ids=[dataset_id])
    info = backend.datasets(scoped).get(dataset_id)
    if info is None or not backend.passes(info, scoped):
        return []
    return backend.study_ids(scoped, [dataset_id])


def dataset_study_count(*, dataset_id: int, backend: SearchBackend | None = None) -> int:
    """How many studies of a published dataset can be ordered (its total as the search counts
    it), without reading their ids."""
    matches = study_matches(Query(dataset_ids=[dataset_id]), backend, facets=False)
    return matches.per_dataset().get(dataset_id, 0)


def relax_suggestions(*, query: Query, user: User | None,
                      backend: SearchBackend | None = None) -> list[dict[str, Any]]:
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
