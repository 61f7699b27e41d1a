"""Preview images for the dataset page, rendered by the worker from de-identified files.

Only images without burned-in-text risk are rendered (CT, MR, PT, NM, CR, DX, MG, and none
that deid.pixels.burned_in_risk flags: ultrasound, secondary capture, screen saves,
BurnedInAnnotation YES, devices known to burn in). Uncompressed images show their middle
frame; compressed ones their first, decoded the way deid/pixels.py decodes for masking (in
a child process under a time limit: decoders hang on hostile input). Windowed from the
image's own window (or its 1st-99th percentiles), MONOCHROME1 inverted, reduced to at most
256 px, written as an 8-bit grayscale PNG (zlib; no imaging library needed).
"""
from __future__ import annotations

import struct
import zlib
from typing import IO

import numpy as np
import pydicom

from deid.errors import UnsupportedError
from deid.pixels import burned_in_risk, first_frame

PREVIEW_MODALITIES = {"CT", "MR", "PT", "NM", "CR", "DX", "MG"}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
MAX_SIDE = 256


def _first(value: object) -> float | None:
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]  # type: ignore[index]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


def render_preview(fp: IO[bytes], *, max_side: int = MAX_SIDE) -> tuple[bytes, int, int] | None:
    """(png, width, height) for a de-identified DICOM file, or None when it gets none."""
    ds = pydicom.dcmread(fp)
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
    if ("PixelData" not in ds or str(ds.get("Modality", "")) not in PREVIEW_MODALITIES
            or str(ds.get("BurnedInAnnotation", "")).upper() == "YES" or int(ds.get("SamplesPerPixel", 1)) != 1):
        return None
    # Anything deid would treat as possibly carrying burned-in text (screen saves, secondary
    # captures, devices known to burn in) gets no preview, even where the provider accepted
    # that risk for the data itself.
    if burned_in_risk(ds) is not None:
        return None
    if ts in UNCOMPRESSED:
        pixels = ds.pixel_array
        if pixels.ndim == 3:
            pixels = pixels[pixels.shape[0] // 2]  # the middle frame
    else:
        try:
            pixels = first_frame(ds)
        except UnsupportedError:
            return None  # no decoder, or it failed or hung: no preview, the data is still sold
    values = pixels.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or not width or width <= 0:
        low, high = np.percentile(values, [1, 99])
    else:
        low, high = center - width / 2, center + width / 2
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255 - scaled
    step = max(1, int(np.ceil(max(scaled.shape) / max_side)))
    image = scaled[::step, ::step].astype(np.uint8)
    return png_gray(image), image.shape[1], image.shape[0]


def png_gray(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a 2-D uint8 array."""
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
