"""DICOM de-identification (PS3.15 Annex E) for the marketplace. No Django in here.

    from deid import deidentify_file, Options, DeidReport, DeidError
    report = deidentify_file(src, dst, key=provider_key, options=Options())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from deid.engine import deidentify_file

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


def __getattr__(name: str) -> Any:
    # deidentify_file is imported when used: the engine pulls pydicom and numpy (about 40 MB),
    # which a web worker that only imports deid's errors and options never needs.
    if name == "deidentify_file":
        from deid.engine import deidentify_file

        globals()["deidentify_file"] = deidentify_file  # looked up once
        return deidentify_file
    raise AttributeError(f"module 'deid' has no attribute {name!r}")
