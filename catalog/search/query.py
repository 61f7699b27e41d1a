"""The one query parser: GET / POST / JSON data → a ``Query``, for every search.

The dataset catalog (/datasets/, /api/datasets/), the cohort builder and the study APIs
(/cohorts/, /api/studies/, /api/cohorts/), cohorts in orders (criteria.py) and saved
searches all parse with ``query_from``; what differs is the ``Scope`` (which facets and
which other parameters a front door accepts). Facets, their values and labels come from
the vocabulary (catalog/facets.py). Every refusal is an ``InvalidQueryError`` naming the
parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.exceptions import InvalidQueryError
from catalog.facets import DATASET_SEARCH_FACETS, FACETS, MAX_VALUE_CHARS, RANGES, SORTS, STUDY_FACETS, echo, echo_name

MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class Scope:
    """What one front door accepts: facets (by name) and other parameters."""

    name: str
    facets: tuple[str, ...]
    params: tuple[str, ...]

    def accepted(self) -> tuple[str, ...]:
        return (*self.facets, *self.params)


# The dataset catalog: the facets with a Dataset field.
DATASETS = Scope("datasets", tuple(DATASET_SEARCH_FACETS), ("q", "sort", "page", "format"))
# Study search and the cohort builder: every facet, the price range, a dataset set.
STUDIES = Scope("studies", tuple(FACETS),
                ("q", *RANGES, "sort", "page", "page_size", "format", "datasets"))
# A cohort as orders carry it (criteria of /api/quotes/ and /api/cart/, saved searches'
# stored form): keywords, every facet, the price range.
COHORT = Scope("cohort", tuple(FACETS), ("q", *sorted(RANGES)))


@dataclass
class Query:
    """What a researcher asks for: keywords, facet values (OR within, AND across), a
    price range per study, and optionally a fixed set of datasets (a cohort's)."""

    q: str = ""
    filters: dict[str, list[str]] = field(default_factory=dict)
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    dataset_ids: list[int] | None = None
    sort: str = "relevance"

    def study_filters(self, skip: str | None = None) -> dict[str, list[str]]:
        return {k: v for k, v in self.filters.items() if k in STUDY_FACETS and k != skip}

    def as_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {k: list(v) for k, v in self.filters.items()}
        if self.q:
            params["q"] = self.q
        if self.price_min is not None:
            params["price_min"] = str(self.price_min)
        if self.price_max is not None:
            params["price_max"] = str(self.price_max)
        if self.dataset_ids:
            params["datasets"] = [str(i) for i in self.dataset_ids]
        return params


def _getlist(data: Any, key: str) -> list[str]:
    if hasattr(data, "getlist"):
        return [str(v) for v in data.getlist(key)]
    value = data.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _price(data: Any, key: str) -> Decimal | None:
    raw = (_getlist(data, key) or [""])[0].strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidQueryError(f"{key} must be a number, e.g. {key}=100 (got {echo(raw)}).") from None
    if not value.is_finite() or value < 0 or value > Decimal("1e9"):
        raise InvalidQueryError(f"{key} must be between 0 and 1000000000.")
    return value


def query_from(data: Any, *, scope: Scope = STUDIES) -> Query:
    """Parse and check query parameters (a QueryDict, or a dict of strings / lists of
    strings) for one front door. Unknown parameters, sorts and values are refused with an
    InvalidQueryError naming the parameter."""
    data = data if data is not None else {}
    accepted = set(scope.accepted())
    unknown = sorted(str(k) for k in data.keys() if k not in accepted)
    if unknown:
        raise InvalidQueryError(
            f"Unknown filter: {', '.join(echo_name(k) for k in unknown[:5])}. Known filters: "
            f"{', '.join([*scope.facets, *(p for p in scope.params if p in RANGES)])}.")
    q = " ".join((_getlist(data, "q") or [""])[0].split())[:MAX_QUERY_CHARS]  # cut, not refused
    sort = "relevance"
    if "sort" in scope.params:
        sort = (_getlist(data, "sort") or ["relevance"])[0] or "relevance"
        if sort not in SORTS:
            raise InvalidQueryError(f"Unknown sort {echo(sort)}; use one of {', '.join(sorted(SORTS))}.")
    filters: dict[str, list[str]] = {}
    for name in scope.facets:
        values = sorted({v.strip()[:MAX_VALUE_CHARS] for v in _getlist(data, name) if v.strip()})
        if values:
            FACETS[name].check(values)
            filters[name] = values
    price_min = _price(data, "price_min") if "price_min" in accepted else None
    price_max = _price(data, "price_max") if "price_max" in accepted else None
    if price_min is not None and price_max is not None and price_min > price_max:
        raise InvalidQueryError("price_min is larger than price_max.")
    dataset_ids = None
    if "datasets" in accepted and _getlist(data, "datasets"):
        try:
            dataset_ids = sorted({int(v) for v in _getlist(data, "datasets") if v.strip()})
        except ValueError:
            raise InvalidQueryError("datasets must be dataset ids (numbers).") from None
    return Query(q=q, filters=filters, price_min=price_min, price_max=price_max,
                 dataset_ids=dataset_ids, sort=sort)


__all__ = ["COHORT", "DATASETS", "STUDIES", "InvalidQueryError", "Query", "Scope", "query_from"]
