"""The facet vocabulary: every search filter of the marketplace, defined once.

A facet is a name (the URL / API parameter), a label, the labels of its values, how its
values are checked, the order its values are listed in, its level, and how the backends
reach it. Everything else is derived from this table:

* the query parser (catalog/search/query.py), for the catalog page, the cohort builder,
  the study and dataset APIs, cohorts in orders, and saved searches;
* the backends' study columns (``column`` / ``on_study()``; catalog/search/postgres.py,
  columnar.py, elastic.py, snapshots.py) and dataset attributes (``dataset_values`` in
  postgres.py for dataset-level facets);
* the OpenAPI parameters of /api/datasets/, /api/studies/, /api/cohorts/ and the
  ``criteria`` object of /api/quotes/ and /api/cart/ (``openapi_*`` below);
* the labels on the pages (template filters in catalog/templatetags/facets.py, facet rows,
  cohort criteria in words, the dataset page's charts).

Levels: "study" facets are columns of catalog_study (modality is the study's list of its
series' modalities); "dataset" facets are attributes of the dataset (the datasets are
chosen first). ``dataset_field`` additionally makes a facet a filter of the dataset
catalog page (/datasets/, /api/datasets/), on that Dataset field.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from catalog.exceptions import InvalidQueryError
from catalog.models import AGE_BANDS, LicenceType
from marketplace.countries import COUNTRIES

STUDY, DATASET = "study", "dataset"
NOT_RECORDED = "Not recorded"  # the label of an empty value, everywhere
MAX_VALUE_CHARS = 160  # an open facet's value (a code: "CHEST", "SIEMENS", "ICD10:J18.9|Pneumonia")
MAX_VALUES = 50

# Numeric attributes searched as ranges: (band label, low inclusive, high exclusive).
SLICE_BANDS = [("<1mm", 0.0, 1.0), ("1-2.5mm", 1.0, 2.5), ("2.5-5mm", 2.5, 5.0001), (">5mm", 5.0001, 1e9)]
FIELD_BANDS = [("<1.5T", 0.0, 1.45), ("1.5T", 1.45, 1.55), ("1.5-3T", 1.55, 2.9), ("3T", 2.9, 3.1),
               (">3T", 3.1, 1e9)]


def _band_sql(column: str, bands: list[tuple[str, float, float]]) -> str:
    cases = " ".join(f"WHEN {column} >= {low} AND {column} < {high} THEN '{label}'"
                     for label, low, high in bands)
    return f"(CASE WHEN {column} IS NULL THEN 'unknown' {cases} ELSE 'unknown' END)"


SLICE_SQL = _band_sql("slice_thickness", SLICE_BANDS)
FIELD_SQL = _band_sql("field_strength", FIELD_BANDS)

SEX_LABELS = MappingProxyType({"F": "Female", "M": "Male", "O": "Other"})
YES_NO = MappingProxyType({"true": "Yes", "false": "No"})
# DICOM modality codes (PS3.3 C.7.3.1.1.1) as researchers read them; the code stays in the
# label, it is what the files and the API say.
MODALITY_LABELS = MappingProxyType({
    "CT": "CT (computed tomography)", "MR": "MR (magnetic resonance)", "PT": "PT (PET)",
    "NM": "NM (nuclear medicine)", "US": "US (ultrasound)", "CR": "CR (computed radiography)",
    "DX": "DX (digital radiography)", "MG": "MG (mammography)", "XA": "XA (X-ray angiography)",
    "RF": "RF (fluoroscopy)", "IO": "IO (intra-oral radiography)", "PX": "PX (panoramic X-ray)",
    "OT": "OT (other)", "SC": "SC (secondary capture)", "SEG": "SEG (segmentation)",
    "SR": "SR (structured report)", "RTSTRUCT": "RTSTRUCT (radiotherapy structures)",
    "OCT": "OCT (optical coherence tomography)", "XC": "XC (external camera photography)",
    "SM": "SM (slide microscopy)", "ECG": "ECG (electrocardiography)",
})
# DICOM body part codes whose words run together; the rest read as capitalised words.
_BODY_PART_WORDS = MappingProxyType({
    "HEADNECK": "Head and neck", "CSPINE": "Cervical spine", "TSPINE": "Thoracic spine",
    "LSPINE": "Lumbar spine", "SSPINE": "Sacral spine", "WHOLEBODY": "Whole body", "CHESTABDOMEN": "Chest and abdomen",
    "ABDOMENPELVIS": "Abdomen and pelvis", "CHESTABDPELVIS": "Chest, abdomen and pelvis", "TMJ": "TMJ",
    "IAC": "Internal auditory canal",
})


def body_part_label(code: str) -> str:
    """"CHEST" → "Chest", "HEADNECK" → "Head and neck", "LOWER_LEG" → "Lower leg"."""
    return _BODY_PART_WORDS.get(code) or code.replace("_", " ").capitalize()


def country_label(code: str) -> str:
    """"NZ" → "New Zealand"; a region typed before the list existed stays as it was."""
    return COUNTRIES.get(code.upper(), code) if len(code) == 2 else code


def condition_label(code: str) -> str:
    """"ICD10:J18.9|Pneumonia" → "Pneumonia"."""
    return code.split("|", 1)[1] if "|" in code else code


_CODE = re.compile(r"[A-Za-z0-9.<>+_-]{1,20}")


def echo(value: str) -> str:
    """A refused value as an error message may quote it: a short code ('20-25') as it is,
    anything else (it could be a name typed in the wrong box) not at all."""
    return repr(value) if _CODE.fullmatch(value) else "value (not shown: not a code)"


def echo_name(key: str) -> str:
    """A refused parameter's name as a message may show it: only name-like ones."""
    return key if re.fullmatch(r"[A-Za-z0-9_.\[\]-]{1,40}", key) else "(a name not shown)"


@dataclass(frozen=True)
class Facet:
    name: str  # the parameter
    label: str
    level: str = STUDY
    column: str = ""  # study level: the catalog_study column
    study_sql: str = ""  # expression over catalog_study when it differs from ``column`` (a band)
    array: bool = False  # the column holds a list (a study with CT and PT counts in both)
    boolean: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # value → label (else the value itself)
    label_of: Callable[[str], str] | None = None  # computed labels (condition codes)
    # The values accepted, in the order they are listed (age bands in age order); empty:
    # open (any code up to MAX_VALUE_CHARS), listed most studies first.
    choices: tuple[str, ...] = ()
    dataset_field: str = ""  # a filter of the dataset catalog page too, on this Dataset field
    dataset_field_is_list: bool = True  # array field (overlap) or a plain one (in)
    breakdown: bool = False  # one of the studies-per-value tables on the dataset and order pages
    help: str = ""

    def on_study(self) -> str:
        return self.study_sql or self.column

    @property
    def ordered(self) -> bool:
        return bool(self.choices)

    def value_label(self, value: Any) -> str:
        value = "" if value is None else str(value)
        if not value:
            return NOT_RECORDED
        if self.label_of is not None:
            return self.label_of(value)
        return self.labels.get(value, value)

    def check(self, values: list[str]) -> None:
        """Raise InvalidQueryError naming the parameter for a value outside the vocabulary."""
        if len(values) > MAX_VALUES:
            raise InvalidQueryError(f"Too many values for {self.name} (at most {MAX_VALUES}).")
        if self.choices:
            bad = [v for v in values if v not in self.choices]
            if bad:
                raise InvalidQueryError(f"Unknown {self.name} {echo(bad[0])}; use one of "
                                        f"{', '.join(self.choices)}.")

    def sort_key(self, value: str) -> tuple:
        """Listing order of a value: the vocabulary's own (age order), unknown values last."""
        if value in self.choices:
            return (0, self.choices.index(value), value)
        return (1, 0, value)

    def order(self, counts: Mapping[str, Any]) -> list[str]:
        """The values of one listing in the order every page shows them: a closed vocabulary
        in its own order (age bands by age), an open one most studies first."""
        if self.ordered:
            return sorted(counts, key=self.sort_key)
        return sorted(counts, key=lambda v: (-counts[v] if isinstance(counts[v], int) else 0, str(v)))

    def with_selected(self, counts: Mapping[str, int], selected: list[str]) -> dict[str, int]:
        """The counts plus a zero for each value filtered by that no longer counts anything:
        a ticked box stays on the page, so it can be unticked."""
        return {**counts, **{v: 0 for v in selected if v not in counts}}

    def describe(self) -> str:
        text = self.help or f"Filter by {self.label.lower()}"
        if self.choices:
            named = [f"{v} ({self.labels[v]})" if v in self.labels else v for v in self.choices]
            text += f"; one of {', '.join(named)}"
        return text + "; repeat for OR"


_AGE = tuple(label for _, _, label in AGE_BANDS) + ("unknown",)

# In the order the pages list them.
FACETS: dict[str, Facet] = {f.name: f for f in [
    Facet("modality", "Modality", column="modalities", array=True, dataset_field="modalities", labels=MODALITY_LABELS,
          help="Filter by DICOM modality code (CT, MR, PT, ...)"),
    Facet("body_part", "Body part", column="body_part", dataset_field="body_parts", breakdown=True,
          label_of=body_part_label,
          help="Filter by DICOM body part examined (CHEST, BRAIN, ...)"),
    Facet("condition", "Condition", level=DATASET, label_of=condition_label,
          help="Filter by condition code (as listed in the condition facet)"),
    Facet("sex", "Sex", column="patient_sex", labels=SEX_LABELS, choices=("F", "M", "O"),
          dataset_field="sexes", breakdown=True),
    Facet("age_band", "Age", column="age_band", choices=_AGE, dataset_field="age_bands", breakdown=True),
    Facet("ethnicity", "Ethnicity", column="ethnicity"),
    Facet("manufacturer", "Manufacturer", column="manufacturer", dataset_field="manufacturers",
          breakdown=True),
    Facet("model", "Model", column="model"),
    Facet("slice_thickness", "Slice thickness", column="slice_thickness", study_sql=SLICE_SQL,
          choices=tuple(label for label, _, _ in SLICE_BANDS) + ("unknown",)),
    Facet("field_strength", "Field strength", column="field_strength", study_sql=FIELD_SQL,
          choices=tuple(label for label, _, _ in FIELD_BANDS) + ("unknown",)),
    Facet("has_report", "Has reports", column="has_report", boolean=True, labels=YES_NO,
          choices=("true", "false")),
    Facet("has_annotation", "Has annotations", column="has_annotation", boolean=True, labels=YES_NO,
          choices=("true", "false")),
    Facet("licence", "Licence", level=DATASET, labels=dict(LicenceType.choices),
          choices=tuple(LicenceType.values)),
    Facet("provider", "Provider", level=DATASET, dataset_field="provider__name", dataset_field_is_list=False),
    Facet("country", "Country / region", level=DATASET, label_of=country_label),
]}

STUDY_FACETS: dict[str, Facet] = {n: f for n, f in FACETS.items() if f.level == STUDY}
DATASET_LEVEL: dict[str, str] = {n: f.label for n, f in FACETS.items() if f.level == DATASET}
DATASET_SEARCH_FACETS: dict[str, Facet] = {n: f for n, f in FACETS.items() if f.dataset_field}
BREAKDOWN_FACETS: dict[str, Facet] = {n: f for n, f in FACETS.items() if f.breakdown}
ALL_FILTERS = list(FACETS)

SORTS: dict[str, str] = {"relevance": "Best match", "newest": "Newest first", "size": "Largest first",
                         "price": "Price, lowest first", "-price": "Price, highest first"}
RANGES: dict[str, str] = {"price_min": "Price per study at least", "price_max": "Price per study at most"}

_BY_COLUMN = {f.column: f for f in STUDY_FACETS.values()}


def facet_label(name: str) -> str:
    facet = FACETS.get(name)
    return facet.label if facet else {"q": "Keywords", **RANGES}.get(name, name)


def value_label(name: str, value: Any) -> str:
    """The label of one value of a facet ("sex", "F" → "Female"); unknown facets: the value."""
    facet = FACETS.get(name)
    if facet is None:
        return str(value) if value not in (None, "") else NOT_RECORDED
    return facet.value_label(value)


def facet_for_column(column: str) -> Facet | None:
    """The study-level facet stored in this catalog_study column, or of this name (the
    dataset page's charts are keyed by either)."""
    return _BY_COLUMN.get(column) or STUDY_FACETS.get(column)


# ---- OpenAPI, from the table ------------------------------------------------------------

def _value_schema(facet: Facet) -> dict[str, Any]:
    if facet.choices:
        return {"type": "string", "enum": list(facet.choices)}
    return {"type": "string", "maxLength": MAX_VALUE_CHARS}


def openapi_query_parameters(names: list[str], *, extra: list[str]) -> list[Any]:
    """drf-spectacular parameters for a GET search over these facets and other parameters."""
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import OpenApiParameter

    other = {
        "q": OpenApiParameter("q", OpenApiTypes.STR, description="Keywords (web-search syntax)"),
        "price_min": OpenApiParameter("price_min", OpenApiTypes.NUMBER, description="Price per study, at least"),
        "price_max": OpenApiParameter("price_max", OpenApiTypes.NUMBER, description="Price per study, at most"),
        "datasets": OpenApiParameter("datasets", OpenApiTypes.INT, many=True,
                                     description="Restrict to these datasets"),
        "sort": OpenApiParameter("sort", OpenApiTypes.STR, enum=list(SORTS),
                                 description="; ".join(f"{k}: {v}" for k, v in SORTS.items())),
        "page": OpenApiParameter("page", OpenApiTypes.INT, description="Page number, from 1"),
        "page_size": OpenApiParameter("page_size", OpenApiTypes.INT, description="Accepted; pages are of a fixed size"),
        "format": OpenApiParameter("format", OpenApiTypes.STR, enum=["json"]),
    }
    facets = [OpenApiParameter(n, OpenApiTypes.STR, many=True, description=FACETS[n].describe(),
                               enum=list(FACETS[n].choices) or None) for n in names]
    return [other["q"], *facets, *(other[k] for k in extra if k != "q")]


def openapi_criteria_schema(keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of a cohort's criteria ({"sex": ["F"], "q": "brain"}): exactly these keys."""
    def one_or_many(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "array", "items": schema, "maxItems": MAX_VALUES}]}

    properties: dict[str, Any] = {}
    for key in keys:
        if key in FACETS:
            properties[key] = {**one_or_many(_value_schema(FACETS[key])), "description": FACETS[key].describe()}
        elif key in RANGES:
            properties[key] = {**one_or_many({"type": "string", "pattern": r"^\d{1,10}(\.\d+)?$"}),
                               "description": f"{RANGES[key]} (a decimal number)"}
        else:  # q
            properties[key] = {**one_or_many({"type": "string", "maxLength": 200}),
                               "description": "Keywords (web-search syntax)"}
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": "The cohort, as in /api/cohorts/: keywords, filters and the price range"}
