"""The image viewer: one series as server-rendered PNG frames (a slider, window/level, zoom).

Frames are windowed 8-bit pictures, never DICOM: a visitor of a published dataset's preview
sees what the dataset page shows, larger and scrollable, not the data. The same gate as the
previews (catalog/datasets/previews.image_values: preview modalities only, nothing at risk of
burned-in text, compressed data decoded in a child process under a time limit). A series is
evenly sampled down to MAX_FRAMES and each frame reduced to at most FRAME_SIDE px.

Decoding is the slow part, so a frame's values are cached (a window change re-windows them
without reading storage again) and so is each PNG. A file that cannot be shown is cached as
such too: a hostile file is read once, not on every request.
"""
from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache
from django.http import Http404, HttpResponse

import storage
from catalog.datasets.previews import ImageValues, image_values, png_gray, windowed

MAX_FRAMES = 64
FRAME_SIDE = 512
CACHE_SECONDS = 3600
_BAD = b"-"  # cached marker: this file cannot be shown

# Common window presets (centre, width) in modality units; CT in Hounsfield units.
PRESETS: dict[str, list[tuple[str, float, float]]] = {
    "CT": [("Soft tissue", 40, 400), ("Lung", -600, 1500), ("Bone", 400, 1800), ("Brain", 40, 80),
           ("Liver", 60, 160), ("Mediastinum", 50, 350)],
}

logger = logging.getLogger(__name__)


class FrameUnavailable(Exception):
    """The frame cannot be shown: not an image the viewer may render, or it cannot be decoded."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float


def frames_sample(keys: Sequence[str], limit: int = MAX_FRAMES) -> list[str]:
    """At most `limit` of a series' storage keys (in slice order), evenly spaced, first and last kept."""
    if len(keys) <= limit:
        return list(keys)
    return [keys[round(i * (len(keys) - 1) / (limit - 1))] for i in range(limit)]


def window_parse(center: str | None, width: str | None) -> Window | None:
    """A window asked for in a query string, rounded to whole units (a bounded set of cached
    PNGs); None for the image's own or for anything unreadable."""
    try:
        c, w = round(float(center or "")), round(float(width or ""))
    except (ValueError, OverflowError):  # NaN, text; inf (1e400)
        return None
    if not (-100_000 <= c <= 100_000 and 1 <= w <= 200_000):
        return None
    return Window(c, w)


def _cache_key(kind: str, storage_key: str, *extra: object) -> str:
    digest = hashlib.sha256(storage_key.encode()).hexdigest()[:32]
    return ":".join(["viewer", kind, digest, *(str(e) for e in extra)])


def frame_values(storage_key: str) -> ImageValues:
    """The frame's values, from the cache or decoded from storage; FrameUnavailable if none."""
    key = _cache_key("values", storage_key)
    cached = cache.get(key)
    if cached == _BAD:
        raise FrameUnavailable
    if cached is not None:
        shape, center, width, invert, packed = cached
        values = np.frombuffer(zlib.decompress(packed), dtype=np.float32).reshape(shape)
        return ImageValues(values=values, center=center, width=width, invert=invert)
    try:
        with storage.open_read(storage_key) as fp:
            image = image_values(fp, max_side=FRAME_SIDE)
    except Exception as exc:  # noqa: BLE001 - hostile or damaged files: an unavailable frame, never a 500
        # The class name only: a decoder's message may quote the file's content.
        logger.warning("viewer frame unreadable: %s", type(exc).__name__)
        image = None
    if image is None:
        cache.set(key, _BAD, CACHE_SECONDS)
        raise FrameUnavailable
    packed = zlib.compress(np.ascontiguousarray(image.values, dtype=np.float32).tobytes(), 1)
    cache.set(key, (image.values.shape, image.center, image.width, image.invert, packed), CACHE_SECONDS)
    return image


def frame_png(storage_key: str, window: Window | None = None) -> bytes:
    """The frame as an 8-bit PNG under `window` (the image's own when None)."""
    key = _cache_key("png", storage_key, *(("own",) if window is None else (window.center, window.width)))
    png = cache.get(key)
    if png is None:
        image = frame_values(storage_key)
        gray = windowed(image, None if window is None else window.center, None if window is None else window.width)
        png = png_gray(gray)
        cache.set(key, png, CACHE_SECONDS)
    return png


def default_window(storage_key: str) -> Window | None:
    """The image's own window of a frame (shown in the viewer's inputs), None if it cannot be shown."""
    try:
        image = frame_values(storage_key)
    except FrameUnavailable:
        return None
    return Window(round(image.center), max(1, round(image.width)))


def presets_for(modality: str) -> list[tuple[str, float, float]]:
    return PRESETS.get(modality.upper(), [])


def series_keys(instances) -> list[str]:  # noqa: ANN001 - a queryset of rows with storage_key
    """The storage keys of a series' frames: slice order, sampled to MAX_FRAMES."""
    return frames_sample(list(instances.values_list("storage_key", flat=True)))


def frame_response(keys: Sequence[str], frame: int, query, *, cache_control: str) -> HttpResponse:  # noqa: ANN001
    """One frame as a PNG; a frame that cannot be shown is a 404 with a short text the viewer
    shows in its place (the same for a frame number past the end)."""
    if not 0 <= frame < len(keys):
        raise Http404("No such frame.")
    try:
        png = frame_png(keys[frame], window_parse(query.get("c"), query.get("w")))
    except FrameUnavailable:
        response = HttpResponse("This frame cannot be shown.", status=404, content_type="text/plain; charset=utf-8")
        response["Cache-Control"] = cache_control
        return response
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = cache_control
    response["X-Content-Type-Options"] = "nosniff"
    return response


def viewer_context(*, keys: Sequence[str], modality: str, frame_url: str, title: str, back_url: str,
                   back_label: str) -> dict:
    """What the viewer page needs: the frame count, the middle frame first, its own window."""
    middle = len(keys) // 2
    window = default_window(keys[middle]) if keys else None
    return {"frames": len(keys), "start": middle, "window": window, "presets": presets_for(modality),
            "modality": modality, "frame_url": frame_url, "title": title, "back_url": back_url,
            "back_label": back_label, "max_side": FRAME_SIDE}


def audit_once(*, who: str, what: str, record) -> None:  # noqa: ANN001
    """Record a viewing in the audit trail once an hour per viewer and series, not per frame
    (a slider drag asks for dozens)."""
    if cache.add(f"viewer:audit:{who}:{what}", 1, CACHE_SECONDS):
        record()
