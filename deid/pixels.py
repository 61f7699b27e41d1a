"""Burned-in pixel PHI: decide per image whether to pass, mask or reject it.

`decide` reads only header attributes, so the engine can stream pixel data untouched for
the images that need no cleaning. `mask` is called only for images a rule matches; it
decodes the pixels (the one place that does), blanks the rule's regions and returns the
transfer syntax of the re-encoded, uncompressed pixel data.

Masking rules (CTP pixel-anonymizer style: keyed on manufacturer, model and image size)
live in deid/data/ as data. This module is the seam; the rule engine is being built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydicom.dataset import Dataset

from deid.errors import UnsupportedError
from deid.profile import Options

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, Float, DoubleFloat
# Secondary Capture SOP classes (single- and multi-frame): screenshots, scanned paper.
_SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
_ULTRASOUND = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"}


@dataclass(frozen=True)
class MaskRule:
    """Rectangles (x, y, width, height in pixels) to blank on images the rule matches."""

    name: str
    regions: tuple[tuple[int, int, int, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PixelDecision:
    action: Literal["pass", "mask", "reject"]
    reason: str = ""  # PHI-free; for "reject" it is the error message
    rule: MaskRule | None = None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip().upper() if value is not None else ""


def burned_in_risk(ds: Dataset) -> str | None:
    """Reason why the pixels may hold burned-in PHI, or None. PHI-free."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return None
    if _text(ds, "BurnedInAnnotation") == "YES":
        return "image declares BurnedInAnnotation YES"
    if _text(ds, "Modality") == "US" or _text(ds, "SOPClassUID") in _ULTRASOUND:
        return "ultrasound image"
    if _text(ds, "SOPClassUID") in _SECONDARY_CAPTURE:
        return "secondary capture image"
    return None


def find_masking_rule(ds: Dataset) -> MaskRule | None:
    """The first masking rule matching this image's device and size, or None."""
    return None


def decide(ds: Dataset, options: Options) -> PixelDecision:
    """Pass, mask or reject, from header attributes only (PixelData is never touched)."""
    risk = burned_in_risk(ds)
    if risk is None:
        return PixelDecision("pass")
    rule = find_masking_rule(ds) if options.clean_pixel_data else None
    if rule is not None:
        return PixelDecision("mask", f"{risk}: masked by rule {rule.name}", rule)
    if options.accept_burned_in_risk:
        return PixelDecision("pass", f"{risk}: provider accepted the burned-in risk")
    return PixelDecision("reject", f"burned-in annotation: {risk} with no masking rule")


def mask(ds: Dataset, rule: MaskRule) -> str:
    """Blank the rule's regions in every frame; return the output transfer syntax UID."""
    raise UnsupportedError("pixel masking is not available yet")
