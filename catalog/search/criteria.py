"""A cohort's definition as an order carries it: keywords, every filter and the price range,
stored as a dict of lists, parsed by the same parser as the search, and described in words.

The order page, the quote API and the order itself all go through here, so what is
ordered is what the cohort builder counted, criterion for criterion.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from catalog.exceptions import InvalidQueryError
from catalog.facets import RANGES, facet_label, value_label
from catalog.search.query import COHORT, Query, query_from

COHORT_KEYS = COHORT.accepted()  # ("q", every facet, "price_max", "price_min") as ordered
# Parameters of a search page that are not part of what is ordered.
PAGE_ONLY = {"page", "page_size", "sort", "format", "datasets"}


def cohort_from(data: Any) -> Query:
    """The cohort in these parameters (a QueryDict or a dict of lists / strings); unknown
    keys and bad values are an InvalidQueryError naming them. Paging, sort and a dataset
    set are not part of a cohort."""
    if hasattr(data, "lists"):
        picked = {k: v for k, v in data.lists() if k not in PAGE_ONLY}
    else:
        picked = {k: v for k, v in (data or {}).items() if k not in PAGE_ONLY}
    for key, value in picked.items():
        if not isinstance(value, (str, list, tuple)) or (
                isinstance(value, (list, tuple)) and not all(isinstance(v, (str, int, float)) for v in value)):
            raise InvalidQueryError(f"{str(key)[:40]} must be a text or a list of texts.")
    return query_from(picked, scope=COHORT)


def cohort_criteria(query: Query) -> dict[str, list[str]]:
    """The stored form: {"q": ["brain"], "sex": ["F"], "price_max": ["10"]} (empty: everything)."""
    params = {k: v for k, v in query.as_params().items() if k in COHORT_KEYS}
    return {k: list(v) if isinstance(v, list) else [v] for k, v in params.items()}


def describe(query: Query, *, keep: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    """Every criterion in words, each with the parameters of the cohort without it:
    [{"key", "value", "text", "without"}] ("without" is a query string; ``keep``: other
    parameters of the page it stays on, such as its sort, added to each)."""
    criteria = cohort_criteria(query)
    out = []
    for key, values in criteria.items():
        for value in values:
            if key == "q":
                text = f"Keywords: “{value}”"
            elif key in RANGES:
                text = f"{RANGES[key]} {value}"
            else:
                text = f"{facet_label(key)}: {value_label(key, value)}"
            rest = {k: [v for v in vs if not (k == key and v == value)] for k, vs in criteria.items()}
            rest = {**{k: vs for k, vs in rest.items() if vs}, **(keep or {})}
            out.append({"key": key, "value": value, "text": text, "without": urlencode(rest, doseq=True)})
    return out


def criteria_url(path: str, query: Query, *, keys: tuple[str, ...] = COHORT_KEYS) -> str:
    """A page's address carrying the cohort's criteria it accepts (``keys``): the catalog
    and the cohort builder send each other the same search."""
    params = {k: v for k, v in cohort_criteria(query).items() if k in keys}
    return f"{path}?{urlencode(params, doseq=True)}" if params else path


__all__ = ["COHORT_KEYS", "InvalidQueryError", "cohort_criteria", "cohort_from", "criteria_url", "describe"]
