"""What the engine did, for the catalog and the audit trail. Never holds PHI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydicom.dataset import Dataset

from deid.dates import parse_da

METADATA_KEYS = (
    "patient_id", "patient_sex", "patient_age", "modality", "body_part", "manufacturer",
    "model", "study_date", "study_description", "series_description", "study_uid",
    "series_uid", "sop_uid", "sop_class_uid", "series_number", "instance_number", "rows",
    "columns", "frames", "transfer_syntax_uid",
)


@dataclass
class DeidReport:
    """Output values only (pseudonyms, shifted dates, remapped UIDs) and action counts."""

    metadata: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    verified: bool = False
    profile: str = ""
    method_codes: list[str] = field(default_factory=list)


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def build_metadata(out: Dataset, transfer_syntax: str) -> dict[str, Any]:
    """Catalog fields, read from the de-identified OUTPUT data set."""
    study_date: date | None = parse_da(_str(out, "StudyDate"))
    frames = _int(out, "NumberOfFrames")
    meta = {
        "patient_id": _str(out, "PatientID"),
        "patient_sex": _str(out, "PatientSex"),
        "patient_age": _str(out, "PatientAge"),
        "modality": _str(out, "Modality"),
        "body_part": _str(out, "BodyPartExamined"),
        "manufacturer": _str(out, "Manufacturer"),
        "model": _str(out, "ManufacturerModelName"),
        "study_date": study_date,
        "study_description": _str(out, "StudyDescription"),
        "series_description": _str(out, "SeriesDescription"),
        "study_uid": _str(out, "StudyInstanceUID"),
        "series_uid": _str(out, "SeriesInstanceUID"),
        "sop_uid": _str(out, "SOPInstanceUID"),
        "sop_class_uid": _str(out, "SOPClassUID"),
        "series_number": _int(out, "SeriesNumber"),
        "instance_number": _int(out, "InstanceNumber"),
        "rows": _int(out, "Rows"),
        "columns": _int(out, "Columns"),
        "frames": frames if frames is not None else (1 if "PixelData" in out else 0),
        "transfer_syntax_uid": str(transfer_syntax),
    }
    assert tuple(meta) == METADATA_KEYS
    return meta
