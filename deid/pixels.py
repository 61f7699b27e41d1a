"""Burned-in annotation gate. Pixel masking rules will plug in here (later issue).

Today the engine never decodes pixels: it only decides whether an image is likely to
carry burned-in text, and refuses it unless the caller accepts that risk.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

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


def find_masking_rule(ds: Dataset) -> None:
    """Seam for pixel masking rules (CTP-style per device); none exist yet."""
    return None
