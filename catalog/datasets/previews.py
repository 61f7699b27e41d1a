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
from dataclasses import dataclass
from typing import IO

import numpy as np
import pydicom
from pydicom.pixels import iter_pixels

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
    image = image_values(fp, max_side=max_side)
    if image is None:
        return None
    gray = windowed(image)
    return png_gray(gray), gray.shape[1], gray.shape[0]


@dataclass(frozen=True)
class ImageValues:
    """One frame's rescaled values (reduced to at most max_side) and its own display window."""
    values: np.ndarray  # float32, modality units (HU for CT)
    center: float
    width: float
    invert: bool  # MONOCHROME1: low values show white


def image_values(fp: IO[bytes], *, max_side: int = MAX_SIDE, frame: int | None = None) -> ImageValues | None:
    """The values of one frame of a de-identified DICOM file (the middle one unless `frame`
    is given; compressed data: the first), or None when it may not be shown or cannot be
    decoded. The one gate of the dataset page's previews and of the viewer."""
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
        # One frame decoded, not the whole multi-frame object (bounded work and memory).
        frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
        index = frames // 2 if frame is None else min(max(frame, 0), frames - 1)
        pixels = next(iter_pixels(ds, indices=[index]))
    else:
        try:
            pixels = first_frame(ds)
        except UnsupportedError:
            return None  # no decoder, or it failed or hung: no preview, the data is still sold
    if pixels.ndim != 2:
        return None
    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    values = (pixels[::step, ::step].astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
              + float(ds.get("RescaleIntercept", 0) or 0))
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or not width or width <= 0:
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
        center, width = (low + high) / 2, max(high - low, 1.0)
    return ImageValues(values=values, center=center, width=width,
                       invert=str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1")


def windowed(image: ImageValues, center: float | None = None, width: float | None = None) -> np.ndarray:
    """8-bit gray of the values under a window (the image's own unless given)."""
    center = image.center if center is None else center
    width = image.width if width is None else width
    low, high = center - width / 2, center + width / 2
    scaled = np.clip((image.values - low) / max(high - low, 1e-6), 0, 1) * 255
    if image.invert:
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


def png_gray(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a 2-D uint8 array."""
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
