"""DICOM de-identification (PS3.15 Annex E) for the marketplace. No Django in here.

    from deid import deidentify_file, Options, DeidReport, DeidError
    report = deidentify_file(src, dst, key=provider_key, options=Options())
"""

from __future__ import annotations

from deid.engine import deidentify_file
from deid.errors import (
    BurnedInAnnotationError,
    DeidError,
    MalformedDicomError,
    NotDicomError,
    PHIRemainsError,
    UnsupportedError,
)
from deid.profile import Options
from deid.report import DeidReport

__all__ = [
    "BurnedInAnnotationError",
    "DeidError",
    "DeidReport",
    "MalformedDicomError",
    "NotDicomError",
    "Options",
    "PHIRemainsError",
    "UnsupportedError",
    "deidentify_file",
]
