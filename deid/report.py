"""What the engine did, for the catalog and the audit trail. Never holds PHI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from deid.dates import parse_da

METADATA_KEYS = (
    "patient_id", "patient_sex", "patient_age", "modality", "body_part", "manufacturer",
    "model", "study_date", "study_description", "series_description", "study_uid",
    "series_uid", "sop_uid", "sop_class_uid", "series_number", "instance_number", "rows",
    "columns", "frames", "transfer_syntax_uid", "ethnic_group", "slice_thickness",
    "field_strength",
)


@dataclass
class DeidReport:
    """Output values only (pseudonyms, shifted dates, remapped UIDs) and action counts."""

    metadata: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    verified: bool = False
    profile: str = ""
    method_codes: list[str] = field(default_factory=list)


# keyword -> value; "A.B.C": C in the first item of sequence B in the first item of A.
Getter = Callable[[str], Any]

# Enhanced multi-frame objects keep the slice thickness in their functional groups.
_SLICE_THICKNESS = ("SliceThickness",
                    "SharedFunctionalGroupsSequence.PixelMeasuresSequence.SliceThickness",
                    "PerFrameFunctionalGroupsSequence.PixelMeasuresSequence.SliceThickness")


def dataset_getter(ds: Any) -> Getter:
    """A Getter over a pydicom data set."""
    def get(keyword: str) -> Any:
        *path, last = keyword.split(".")
        item = ds
        for name in path:
            items = item.get(name)
            if not items:
                return None
            item = items[0]
        return item.get(last)
    return get


def _str(get: Getter, keyword: str) -> str:
    value = get(keyword)
    return "" if value is None else str(value).strip()


def _int(get: Getter, keyword: str) -> int | None:
    value = get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(get: Getter, keyword: str) -> float | None:
    value = get(keyword)
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and number == number and abs(number) < 1e6 else None


def build_metadata(get: Getter, transfer_syntax: str, *, has_pixels: bool) -> dict[str, Any]:
    """Catalog fields, read from the de-identified OUTPUT (``get(keyword)`` -> its value)."""
    study_date: date | None = parse_da(_str(get, "StudyDate"))
    frames = _int(get, "NumberOfFrames")
    meta = {
        "patient_id": _str(get, "PatientID"),
        "patient_sex": _str(get, "PatientSex"),
        "patient_age": _str(get, "PatientAge"),
        "modality": _str(get, "Modality"),
        "body_part": _str(get, "BodyPartExamined"),
        "manufacturer": _str(get, "Manufacturer"),
        "model": _str(get, "ManufacturerModelName"),
        "study_date": study_date,
        "study_description": _str(get, "StudyDescription"),
        "series_description": _str(get, "SeriesDescription"),
        "study_uid": _str(get, "StudyInstanceUID"),
        "series_uid": _str(get, "SeriesInstanceUID"),
        "sop_uid": _str(get, "SOPInstanceUID"),
        "sop_class_uid": _str(get, "SOPClassUID"),
        "series_number": _int(get, "SeriesNumber"),
        "instance_number": _int(get, "InstanceNumber"),
        "rows": _int(get, "Rows"),
        "columns": _int(get, "Columns"),
        "frames": frames if frames is not None else (1 if has_pixels else 0),
        "transfer_syntax_uid": str(transfer_syntax),
        # Kept by the Retain Patient Characteristics Option only.
        "ethnic_group": _str(get, "EthnicGroup"),
        "slice_thickness": next((v for k in _SLICE_THICKNESS if (v := _float(get, k)) is not None),
                                None),
        "field_strength": _float(get, "MagneticFieldStrength"),
    }
    assert tuple(meta) == METADATA_KEYS
    return meta
