"""Study-level search dimensions: the facets, their bands, and parsing a query from the URL.

One table of facets serves the snapshots (what they encode), the backends (what they
filter and count) and the API (what parameters exist). Study-level facets are columns of
catalog_study; dataset-level facets are attributes of the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.exceptions import CatalogError
from catalog.models import AGE_BANDS, LicenceType

MAX_QUERY_CHARS = 200
MAX_VALUES = 50

# Numeric attributes searched as ranges: (band label, low inclusive, high exclusive).
SLICE_BANDS = [("<1mm", 0.0, 1.0), ("1-2.5mm", 1.0, 2.5), ("2.5-5mm", 2.5, 5.0001), (">5mm", 5.0001, 1e9)]
FIELD_BANDS = [("<1.5T", 0.0, 1.45), ("1.5T", 1.45, 1.55), ("1.5-3T", 1.55, 2.9), ("3T", 2.9, 3.1),
               (">3T", 3.1, 1e9)]


@dataclass(frozen=True)
class Facet:
    name: str
    label: str
    column: str  # in catalog_study (``study_sql``: an expression over it, e.g. a band)
    study_sql: str = ""  # expression over catalog_study when it differs from ``column``
    array: bool = False  # the column holds a list (a study with CT and PT counts in both)
    boolean: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def on_study(self) -> str:
        return self.study_sql or self.column


def _band_sql(column: str, bands: list[tuple[str, float, float]]) -> str:
    cases = " ".join(f"WHEN {column} >= {low} AND {column} < {high} THEN '{label}'"
                     for label, low, high in bands)
    return f"(CASE WHEN {column} IS NULL THEN 'unknown' {cases} ELSE 'unknown' END)"


SLICE_SQL = _band_sql("slice_thickness", SLICE_BANDS)
FIELD_SQL = _band_sql("field_strength", FIELD_BANDS)
SEX_LABELS = {"F": "Female", "M": "Male", "O": "Other", "": "Unknown"}
YES_NO = {"true": "Yes", "false": "No"}

STUDY_FACETS: dict[str, Facet] = {f.name: f for f in [
    Facet("modality", "Modality", "modalities", array=True),
    Facet("body_part", "Body part", "body_part"),
    Facet("sex", "Sex", "patient_sex", labels=SEX_LABELS),
    Facet("age_band", "Age", "age_band"),
    Facet("ethnicity", "Ethnicity", "ethnicity"),
    Facet("manufacturer", "Manufacturer", "manufacturer"),
    Facet("model", "Model", "model"),
    Facet("slice_thickness", "Slice thickness", "slice_thickness", study_sql=SLICE_SQL),
    Facet("field_strength", "Field strength", "field_strength", study_sql=FIELD_SQL),
    Facet("has_report", "Has reports", "has_report", boolean=True, labels=YES_NO),
    Facet("has_annotation", "Has annotations", "has_annotation", boolean=True, labels=YES_NO),
]}
# Dataset attributes, filtered by choosing the datasets first.
DATASET_LEVEL = {"condition": "Condition", "licence": "Licence", "provider": "Provider",
                 "country": "Country / region"}
RANGES = {"price_min", "price_max"}
SORTS = {"relevance", "newest", "price", "-price", "size"}
OTHER_PARAMS = {"q", "sort", "page", "page_size", "format", "datasets"}
ALL_FILTERS = [*STUDY_FACETS, *DATASET_LEVEL]


class InvalidQueryError(CatalogError):
    code = "invalid_search"


@dataclass
class StudyQuery:
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
        raise InvalidQueryError(f"{key} must be a number, e.g. {key}=100 (got {raw[:20]!r}).") from None
    if not value.is_finite() or value < 0 or value > Decimal("1e9"):
        raise InvalidQueryError(f"{key} must be between 0 and 1000000000.")
    return value


def study_query_from(data: Any) -> StudyQuery:
    """Parse and check query parameters (QueryDict or dict). Names the problem on error."""
    unknown = sorted(k for k in data.keys() if k not in set(ALL_FILTERS) | RANGES | OTHER_PARAMS)
    if unknown:
        raise InvalidQueryError(f"Unknown filter: {', '.join(k[:40] for k in unknown[:5])}. "
                                f"Known filters: {', '.join(ALL_FILTERS)}, price_min, price_max.")
    q = " ".join((_getlist(data, "q") or [""])[0].split())[:MAX_QUERY_CHARS]
    sort = (_getlist(data, "sort") or ["relevance"])[0] or "relevance"
    if sort not in SORTS:
        raise InvalidQueryError(f"Unknown sort {sort[:20]!r}; use one of {', '.join(sorted(SORTS))}.")
    filters: dict[str, list[str]] = {}
    for name in ALL_FILTERS:
        values = sorted({v.strip()[:160] for v in _getlist(data, name) if v.strip()})
        if len(values) > MAX_VALUES:
            raise InvalidQueryError(f"Too many values for {name} (at most {MAX_VALUES}).")
        if values:
            _check_values(name, values)
            filters[name] = values
    price_min, price_max = _price(data, "price_min"), _price(data, "price_max")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise InvalidQueryError("price_min is larger than price_max.")
    dataset_ids = None
    if _getlist(data, "datasets"):
        try:
            dataset_ids = sorted({int(v) for v in _getlist(data, "datasets") if v.strip()})
        except ValueError:
            raise InvalidQueryError("datasets must be dataset ids (numbers).") from None
    return StudyQuery(q=q, filters=filters, price_min=price_min, price_max=price_max,
                      dataset_ids=dataset_ids, sort=sort)


def _check_values(name: str, values: list[str]) -> None:
    known: set[str] | None = None
    if name == "age_band":
        known = {label for _, _, label in AGE_BANDS} | {"unknown"}
    elif name == "slice_thickness":
        known = {label for label, _, _ in SLICE_BANDS} | {"unknown"}
    elif name == "field_strength":
        known = {label for label, _, _ in FIELD_BANDS} | {"unknown"}
    elif name in ("has_report", "has_annotation"):
        known = {"true", "false"}
    elif name == "licence":
        known = set(LicenceType.values)
    if known is not None:
        bad = [v for v in values if v not in known]
        if bad:
            raise InvalidQueryError(f"Unknown {name} {bad[0][:40]!r}; use one of {', '.join(sorted(known))}.")
