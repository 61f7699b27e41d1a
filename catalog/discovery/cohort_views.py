"""The cohort builder page: facets with live counts, the cohort's figures, fill the gap,
and the matching studies of datasets open to browsing (sorted, a page at a time).

The URL holds the whole query (shareable, bookmarkable); with JavaScript, changing a
facet fetches the page in the background and swaps in the facets and results
(static/js/cohort.js), and updates the URL.
"""
from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from catalog.disclosure import is_shown
from catalog.exceptions import InvalidQueryError
from catalog.facets import FACETS, SORTS, facet_label
from catalog.search.criteria import cohort_criteria, criteria_url, describe
from catalog.search.queries import count_query_admit, study_browse_record
from catalog.search.query import DATASETS, STUDIES, Query, query_from
from catalog.search.service import (
    MAX_STUDY_PAGE,
    STUDY_PAGE_SIZE,
    browsable_studies,
    cohort_summary,
    facets_and_total,
    relax_suggestions,
    study_matches,
    study_page,
)
from marketplace.ratelimit import RateLimitedError
from marketplace.services import client_ip

SORT_LABELS = list(SORTS.items())


def _with_page(request: HttpRequest, page: int) -> str:
    params = request.GET.copy()
    params["page"] = str(page)
    return params.urlencode()


def mix_chart(name: str, rows: list[dict]) -> dict:
    """One chart of the cohort's mix, drawn as the dataset page draws its charts: a hidden
    row has no bar (no width may tell its count)."""
    largest = max([1, *(row["count"] for row in rows if is_shown(row["count"]))])
    return {"key": name, "label": facet_label(name), "rows": [
        {**row, "width": round(100 * row["count"] / largest, 1) if is_shown(row["count"]) else 0} for row in rows]}


def gap_choices(query: Query, cohort: dict) -> dict:
    """Fill the gap: the datasets of the cohort one may start from (none chosen: every
    dataset counts, so no other dataset is left to suggest), and for a chosen set, the
    links that add a suggested dataset or drop a chosen one."""
    chosen = query.dataset_ids or []
    base = {k: v for k, v in query.as_params().items() if k != "datasets"}

    def with_datasets(ids: list[int]) -> str:
        return "?" + urlencode({**base, **({"datasets": [str(i) for i in sorted(ids)]} if ids else {})}, doseq=True)

    titles = {row["dataset_id"]: row["title"] for row in cohort["datasets"]}
    for suggestion in cohort.get("fill_the_gap", []):
        suggestion["add_url"] = with_datasets([*chosen, suggestion["dataset_id"]])
    return {
        "chosen": [{"title": titles.get(i, f"Dataset {i}"), "without": with_datasets([j for j in chosen if j != i])}
                   for i in chosen],
        "all": with_datasets([]),
        "base_pairs": [(k, v) for k, vs in base.items() for v in (vs if isinstance(vs, list) else [vs])],
    }


def cohort_builder(request: HttpRequest) -> HttpResponse:
    error, status = "", 200
    try:
        query = query_from(request.GET, scope=STUDIES)
        page = study_page(request.GET.get("page"))
    except InvalidQueryError as exc:
        error, status, query, page = exc.message, 400, Query(), 1
    try:
        count_query_admit(user=request.user, ip=client_ip(request), query=query, where="cohort_builder")
    except RateLimitedError as exc:
        response = render(request, "catalog/cohort_builder.html", {"error": exc.message, "query": Query(),
                          "cohort": {"datasets": []}, "facets": [], "rate_limited": True}, status=429)
        response["Retry-After"] = str(exc.extra["retry_after"])
        return response
    matches = study_matches(query)  # one count of every facet and dataset for all three
    found = facets_and_total(query=query, user=request.user, matches=matches)
    cohort = cohort_summary(query=query, user=request.user, matches=matches)
    studies, browsable = browsable_studies(query=query, user=request.user, page=page, matches=matches)
    study_browse_record(user=request.user, ip=client_ip(request), rows=studies, page=page, where="cohort_builder")
    pages = max(1, min(MAX_STUDY_PAGE, -(-browsable // STUDY_PAGE_SIZE)))
    # Each dataset's row orders exactly the studies counted: the cohort's whole definition.
    order_query = urlencode(cohort_criteria(query), doseq=True)
    for row in cohort["datasets"]:
        row["order_url"] = f"{reverse('order_new', args=[row['dataset_id']])}?{order_query}"
    empty = cohort["total_studies"] == 0
    keep = {k: v for k, v in query.as_params().items() if k == "datasets"}
    if query.sort != "relevance":
        keep["sort"] = [query.sort]
    context = {
        "query": query, "error": error, "cohort": cohort, "total": found["total"],
        "cohort_criteria": cohort_criteria(query),
        "facets": [(name, facet.label, found["facets"][name]) for name, facet in FACETS.items()
                   if found["facets"].get(name)],
        # each chip a link to the cohort without it ("Sex: Female", labels from the vocabulary)
        "chips": describe(query, keep=keep),
        "clear_filters": "?" + urlencode({**({"q": query.q} if query.q else {}), **keep}, doseq=True),
        "catalog_url": criteria_url(reverse("dataset_list"), query, keys=DATASETS.accepted()),
        "catalog_leaves_out": [facet_label(k) for k in cohort_criteria(query) if k not in DATASETS.accepted()],
        "relax": relax_suggestions(query=query, user=request.user) if empty else [],
        "mix": [mix_chart(name, rows) for name, rows in cohort["mix"].items()],
        "gap": gap_choices(query, cohort),
        "query_pairs": [(key, value) for key, values in query.as_params().items()
                        for value in (values if isinstance(values, list) else [values])],
        "studies": studies, "browsable": browsable, "page": page, "pages": pages,
        "sorts": SORT_LABELS,
        "page_links": {
            name: f"?{_with_page(request, number)}" for name, number in
            (("first", 1), ("previous", page - 1), ("next", page + 1)) if 1 <= number <= pages},
    }
    return render(request, "catalog/cohort_builder.html", context, status=status)
