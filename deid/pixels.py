"""Burned-in pixel PHI: decide per image whether to pass, mask or reject it.

`decide` reads only header attributes, so the engine can stream pixel data untouched for
the images that need no cleaning. `mask` is called only for images a rule matches; it
decodes the pixels (the one place that does), blanks the rule's regions in every frame
and stores them back uncompressed (explicit VR little endian).

Masking rules live in deid/data/pixel_rules.json, in the spirit of RSNA CTP's
DicomPixelAnonymizer.script: header conditions (modality, manufacturer, model, image
size, ...) select a screen layout, rectangles name where its text sits. First match wins.

Decoding: native (uncompressed) pixel data is read in-process, frame by frame (numpy,
bounded). Compressed pixel data is decoded in a child process under a time limit, since
decoders can loop forever on hostile input (pydicom 3.0.2 loops on a 52-byte JPEG
2000 stream); the child is killed when a frame takes longer than DECODE_TIMEOUT_SECONDS.
The child is a plain subprocess (not multiprocessing), so this also works inside
daemonic worker processes such as Celery's prefork pool.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, Protocol

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from deid import limits
from deid.errors import UnsupportedError
from deid.profile import Options

RULES_FILE = "pixel_rules.json"
RULES_FORMAT = "deid-pixel-rules/1"

# Longest a child may take for one frame (the first frame includes its start-up). Its
# default lives in deid.limits, which the application can set without importing this module.
DECODE_TIMEOUT_SECONDS = limits.DECODE_TIMEOUT_SECONDS
# Child-side decoder, "module:function"; called with the payload dict, yields frames.
# A module-level hook so tests can inject a slow or broken decoder.
DECODER = "deid.pixels:decode_frames"

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, Float, DoubleFloat
# Every header attribute decide() reads (besides the pixel tags): the fast path hands
# decide() a data set holding only these and the identifying ones.
DECISION_KEYWORDS = ("BurnedInAnnotation", "Modality", "SOPClassUID", "ConversionType",
                     "ImageType", "Rows", "Columns", "Manufacturer", "ManufacturerModelName",
                     "RecognizableVisualFeatures")
# Secondary Capture SOP classes (single- and multi-frame): screenshots, scanned paper.
_SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
# Ultrasound image storage, single- and multi-frame, current and retired.
_ULTRASOUND = {
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
}
# IODs whose image module makes BurnedInAnnotation Type 1 (DX, mammography, intra-oral,
# for presentation and for processing): a writer that leaves it out is not trusted.
_BURNED_IN_REQUIRED = {
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
}
_PROJECTION_MODALITIES = {"CR", "DX", "MG", "IO", "PX", "RG"}
# Visible-light images and video: photographs (faces, tattoos), endoscopy, microscopy
# and ophthalmic photography, whose devices burn names and dates into the frames.
_VISIBLE_LIGHT_MODALITIES = {"XC", "ES", "GM", "OP"}
_VISIBLE_LIGHT_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1."  # VL and video storage classes
_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
_OPHTHALMIC_TOMOGRAPHY = {"1.2.840.10008.5.1.4.1.1.77.1.5.4", "1.2.840.10008.5.1.4.1.1.77.1.5.7",
                          "1.2.840.10008.5.1.4.1.1.77.1.5.8"}  # OCT volumes: no photographs
# Whole-slide image types that photograph the slide's label (names, accession numbers).
_SLIDE_LABEL_TYPES = {"LABEL", "OVERVIEW"}
# ImageType values that vendors use for screen saves, dose screens and report pages.
_SCREEN_IMAGE_TYPES = {"SCREEN SAVE", "SCREEN CAPTURE", "SCREENSHOT", "DOSE REPORT",
                       "DOSE INFO", "DOSE_INFO", "CSA REPORT"}
_LOSSY_METHODS = {  # transfer syntax -> LossyImageCompressionMethod
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_CODEC_NAMES = (  # transfer syntax prefix -> decoder family named in error messages
    ("1.2.840.10008.1.2.4.5", "JPEG"),
    ("1.2.840.10008.1.2.4.57", "JPEG lossless"),
    ("1.2.840.10008.1.2.4.70", "JPEG lossless"),
    ("1.2.840.10008.1.2.4.8", "JPEG-LS"),
    ("1.2.840.10008.1.2.4.9", "JPEG 2000"),
    ("1.2.840.10008.1.2.4.20", "HTJ2K"),
    ("1.2.840.10008.1.2.5", "RLE"),
)
_PIXEL_MODULE = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                 "HighBit", "PixelRepresentation", "PhotometricInterpretation",
                 "PlanarConfiguration", "NumberOfFrames")
_MAX_HEADER = 4096


@dataclass(frozen=True)
class MaskRule:
    """Rectangles (x, y, width, height in pixels) to blank on images the rule matches."""

    name: str
    regions: tuple[tuple[int, int, int, int], ...] = ()
    rows: int = 0  # image size the rule was drawn for (0: any)
    columns: int = 0
    whole_image: bool = False
    device_burns_in: bool = False


@dataclass(frozen=True)
class PixelDecision:
    action: Literal["pass", "mask", "reject"]
    reason: str = ""  # PHI-free; for "reject" it is the error message
    rule: MaskRule | None = None


# ---- rules as data -----------------------------------------------------------------------

class Header(Protocol):
    """What the header-only decisions read: a pydicom Dataset, or fast.py's raw header."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __contains__(self, tag: object) -> bool: ...


Matcher = Callable[[Header], bool]


@dataclass(frozen=True)
class PixelRule:
    """One rule of the data file: header conditions plus the MaskRule they select."""

    match: tuple[Matcher, ...]
    rule: MaskRule

    def matches(self, ds: Header) -> bool:
        return all(test(ds) for test in self.match)


_MATCH_KEYS = {"Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName",
               "ImageType", "BurnedInAnnotation", "Rows", "Columns"}


def _text(ds: Header, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert matches nothing
        return ""
    return str(value).strip().upper() if value is not None else ""


def _values(ds: Header, keyword: str) -> set[str]:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return set()
    if value is None:
        return set()
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return {str(v).strip().upper() for v in items}


def _int(ds: Header, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value is not None and value != "" else None
    except Exception:  # noqa: BLE001
        return None


def _text_matcher(keyword: str, spec: Any) -> Matcher:
    if isinstance(spec, str) and spec.strip():
        needle = spec.strip().upper()
        return lambda ds: needle in _text(ds, keyword)
    if isinstance(spec, dict) and set(spec) == {"regex"} and isinstance(spec["regex"], str):
        pattern = re.compile(spec["regex"], re.IGNORECASE)
        return lambda ds: pattern.search(_text(ds, keyword)) is not None
    raise ValueError(f"{keyword}: expected a string or {{'regex': ...}}")


def _list(keyword: str, spec: Any) -> list[str]:
    if not isinstance(spec, list) or not spec or not all(isinstance(v, str) and v for v in spec):
        raise ValueError(f"{keyword}: expected a non-empty list of strings")
    return [v.strip().upper() for v in spec]


def _compile(entry: Mapping[str, Any]) -> PixelRule:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("rule without a name")
    match = entry.get("match")
    if not isinstance(match, dict) or not match:
        raise ValueError(f"rule {name}: no match")
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise ValueError(f"rule {name}: unknown match keys {sorted(unknown)}")
    rows, columns = match.get("Rows"), match.get("Columns")
    if not (isinstance(rows, int) and isinstance(columns, int) and rows > 0 and columns > 0):
        raise ValueError(f"rule {name}: Rows and Columns are required positive integers")
    regions = entry.get("regions")
    if not isinstance(regions, list) or not regions:
        raise ValueError(f"rule {name}: no regions")
    boxes: list[tuple[int, int, int, int]] = []
    for region in regions:
        if (not isinstance(region, list) or len(region) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in region)):
            raise ValueError(f"rule {name}: a region is not [x, y, width, height]")
        x, y, w, h = region
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > columns or y + h > rows:
            raise ValueError(f"rule {name}: region {region} is outside {columns}x{rows}")
        boxes.append((x, y, w, h))
    whole = entry.get("whole_image", False)
    if not isinstance(whole, bool):
        raise ValueError(f"rule {name}: whole_image must be true or false")
    if whole and boxes != [(0, 0, columns, rows)]:
        raise ValueError(f"rule {name}: whole_image needs the one region [0, 0, Columns, Rows]")
    burns = entry.get("device_burns_in", False)
    if not isinstance(burns, bool):
        raise ValueError(f"rule {name}: device_burns_in must be true or false")

    tests: list[Matcher] = [
        lambda ds, r=rows: _int(ds, "Rows") == r,
        lambda ds, c=columns: _int(ds, "Columns") == c,
    ]
    for keyword in ("Modality", "SOPClassUID"):
        if keyword in match:
            allowed = frozenset(_list(keyword, match[keyword]))
            tests.append(lambda ds, k=keyword, a=allowed: _text(ds, k) in a)
    for keyword in ("Manufacturer", "ManufacturerModelName"):
        if keyword in match:
            tests.append(_text_matcher(keyword, match[keyword]))
    if "ImageType" in match:
        needed = frozenset(_list("ImageType", match["ImageType"]))
        tests.append(lambda ds, n=needed: n <= _values(ds, "ImageType"))
    if "BurnedInAnnotation" in match:
        value = match["BurnedInAnnotation"]
        if value not in ("YES", "NO"):
            raise ValueError(f"rule {name}: BurnedInAnnotation must be YES or NO")
        tests.append(lambda ds, v=value: _text(ds, "BurnedInAnnotation") == v)
    rule = MaskRule(name=name, regions=tuple(boxes), rows=rows, columns=columns,
                    whole_image=whole, device_burns_in=burns)
    return PixelRule(match=tuple(tests), rule=rule)


def load_rules(data: Mapping[str, Any] | None = None) -> tuple[PixelRule, ...]:
    """Compile a rules document (default: the shipped deid/data/pixel_rules.json)."""
    if data is None:
        return _shipped_rules()
    if data.get("format") != RULES_FORMAT:
        raise ValueError(f"pixel rules: expected format {RULES_FORMAT}")
    entries = data.get("rules")
    if not isinstance(entries, list):
        raise ValueError("pixel rules: no rules list")
    rules = tuple(_compile(entry) for entry in entries)
    names = [r.rule.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError("pixel rules: duplicate rule names")
    return rules


def rules_document() -> dict[str, Any]:
    text = resources.files("deid").joinpath("data", RULES_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@lru_cache(maxsize=1)
def _shipped_rules() -> tuple[PixelRule, ...]:
    return load_rules(rules_document())


def shipped_rules() -> tuple[PixelRule, ...]:
    """The rules in use (loaded once; the same object until they are loaded again)."""
    return _shipped_rules()


# ---- header-only decisions -----------------------------------------------------------------

def burned_in_risk(ds: Header) -> str | None:
    """Reason why the pixels may hold burned-in PHI, or None. PHI-free.

    At risk: BurnedInAnnotation YES (any modality); ultrasound (modality or SOP class,
    single- and multi-frame); secondary capture SOP classes and anything carrying a
    ConversionType (screen captures, scanned or digitized images); screen saves, dose
    screens and report pages by ImageType; projection radiographs (CR/DX/MG/IO) that are
    SECONDARY (re-captured at a workstation) or whose IOD requires BurnedInAnnotation and
    does not declare it; RecognizableVisualFeatures YES; visible-light photographs and video
    (XC, ES, GM, OP, VL storage classes) and whole-slide label or overview images; and
    devices the rules file marks as burning text in.
    """
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return None
    burned_in = _text(ds, "BurnedInAnnotation")
    if burned_in == "YES":
        return "image declares BurnedInAnnotation YES"
    modality = _text(ds, "Modality")
    sop_class = _text(ds, "SOPClassUID")
    if modality == "US" or sop_class in _ULTRASOUND:
        return "ultrasound image"
    if sop_class in _SECONDARY_CAPTURE:
        return "secondary capture image"
    if _text(ds, "ConversionType"):
        return "screen capture or digitized image"
    image_type = _values(ds, "ImageType")
    if image_type & _SCREEN_IMAGE_TYPES:
        return "screen save or report image"
    if _text(ds, "RecognizableVisualFeatures") == "YES":
        return "image declares recognizable visual features"
    if sop_class == _WHOLE_SLIDE or modality == "SM":
        if image_type & _SLIDE_LABEL_TYPES:
            return "slide label or overview image"
    elif modality in _VISIBLE_LIGHT_MODALITIES or (
            sop_class.startswith(_VISIBLE_LIGHT_PREFIX) and sop_class not in _OPHTHALMIC_TOMOGRAPHY):
        return "visible-light photograph or video"
    if modality in _PROJECTION_MODALITIES or sop_class in _BURNED_IN_REQUIRED:
        if "SECONDARY" in image_type:
            return "secondary projection radiograph"
        if sop_class in _BURNED_IN_REQUIRED and not burned_in:
            return "projection radiograph without BurnedInAnnotation"
    rule = find_masking_rule(ds)
    if rule is not None and rule.device_burns_in:
        return "device known to burn in annotations"
    return None


def find_masking_rule(ds: Header, rules: Sequence[PixelRule] | None = None) -> MaskRule | None:
    """The first masking rule matching this image's device and size, or None."""
    for candidate in _shipped_rules() if rules is None else rules:
        if candidate.matches(ds):
            return candidate.rule
    return None


def decide(ds: Header, options: Options) -> PixelDecision:
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


# ---- masking ------------------------------------------------------------------------------

def _fail(why: str) -> UnsupportedError:
    return UnsupportedError(f"cannot clean pixel data: {why}")


def _codec_name(ts: str) -> str:
    for prefix, name in sorted(_CODEC_NAMES, key=lambda p: -len(p[0])):
        if ts.startswith(prefix):
            return name
    return "this transfer syntax's"


def mask(ds: Dataset, rule: MaskRule) -> str:
    """Blank the rule's regions in every frame; return the output transfer syntax UID.

    `ds` must hold its PixelData. The result is stored back into `ds` uncompressed,
    interleaved (PlanarConfiguration 0), YBR colour decoded to RGB. Raises
    UnsupportedError with a PHI-free reason when the pixels cannot be decoded.
    """
    meta = getattr(ds, "file_meta", None)
    ts_raw = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts_raw:
        raise _fail("transfer syntax unknown")
    ts = UID(str(ts_raw).strip().rstrip("\x00"))
    if "PixelData" not in ds:
        raise _fail("no integer pixel data")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    samples = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not columns or rows <= 0 or columns <= 0:
        raise _fail("image size missing")
    if rule.rows and (rows, columns) != (rule.rows, rule.columns):
        raise _fail("image size does not match the masking rule")
    if bits not in (8, 16, 32):
        raise _fail(f"{bits}-bit pixel data is not supported")
    if samples not in (1, 3) or frames <= 0:
        raise _fail("unsupported pixel layout")
    signed = _int(ds, "PixelRepresentation") == 1
    out_dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    shape = (rows, columns) if samples == 1 else (rows, columns, samples)
    frame_bytes = rows * columns * samples * out_dtype.itemsize

    if ts.is_compressed:
        decoded = _decode_in_child(ds, ts, frames, shape)
    else:
        decoded = _decode_native(ds, frames)

    out = bytearray(frame_bytes * frames + (frame_bytes * frames) % 2)
    done = 0
    try:
        for index, frame in enumerate(decoded):
            if index >= frames or frame.shape != shape:
                raise _fail("decoded frames do not match the image header")
            frame = np.array(frame, copy=True)  # writable, owned
            _blank(frame, rule.regions)
            out[index * frame_bytes:(index + 1) * frame_bytes] = frame.astype(out_dtype).tobytes()
            done += 1
    finally:
        close = getattr(decoded, "close", None)
        if close is not None:
            close()
    if done != frames:  # BurnedInAnnotation NO must be true for every frame
        raise _fail("not every frame could be decoded")

    photometric = _text(ds, "PhotometricInterpretation")
    ds.PixelData = bytes(out)
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    if samples == 3:
        if photometric.startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    method = _LOSSY_METHODS.get(str(ts))
    if method is not None and _text(ds, "LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"  # once lossy, always lossy (PS3.3 C.7.6.1.1.5)
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    if meta is not None:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return str(ExplicitVRLittleEndian)


def _blank(frame: np.ndarray, regions: Sequence[tuple[int, int, int, int]]) -> None:
    rows, columns = frame.shape[0], frame.shape[1]
    for x, y, w, h in regions:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(columns, x + w), min(rows, y + h)
        if x0 < x1 and y0 < y1:
            frame[y0:y1, x0:x1, ...] = 0


def first_frame(ds: Dataset) -> np.ndarray:
    """The first frame of a single-sample image, compressed or not (compressed data is
    decoded in a child process under the time limit, as for masking). Raises
    UnsupportedError with a PHI-free reason when it cannot be decoded."""
    meta = getattr(ds, "file_meta", None)
    ts_raw = meta.get("TransferSyntaxUID") if meta is not None else None
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not ts_raw or not rows or not columns or rows <= 0 or columns <= 0 or "PixelData" not in ds:
        raise _fail("image size or transfer syntax missing")
    if (_int(ds, "SamplesPerPixel") or 1) != 1:
        raise _fail("unsupported pixel layout")
    ts = UID(str(ts_raw).strip().rstrip("\x00"))
    frames = _decode_in_child(ds, ts, 1, (rows, columns)) if ts.is_compressed else _decode_native(ds, 1)
    try:
        frame = next(iter(frames), None)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    if frame is None or frame.shape != (rows, columns):
        raise _fail("decoded frames do not match the image header")
    return np.array(frame, copy=True)


def _decode_native(ds: Dataset, frames: int) -> Iterator[np.ndarray]:
    """Uncompressed data: in-process, one frame at a time (bounded numpy work)."""
    from pydicom.pixels import iter_pixels

    try:
        yield from iter_pixels(ds, indices=range(frames))
    except UnsupportedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reason names the class, not the data
        raise _fail(f"pixel data unreadable ({type(exc).__name__})") from None


# ---- compressed data: decode in a child process under a time limit ---------------------------

def _decode_in_child(ds: Dataset, ts: UID, frames: int, shape: tuple[int, ...], *,
                     timeout: float | None = None) -> Iterator[np.ndarray]:
    if DECODER == "deid.pixels:decode_frames":  # the real decoder: is there a plugin?
        from pydicom.pixels import get_decoder

        try:
            available = get_decoder(ts).is_available
        except NotImplementedError:
            raise _fail("no decoder for this transfer syntax") from None
        if not available:
            raise _fail(f"{_codec_name(str(ts))} decoder not installed")
    payload = {
        "transfer_syntax": str(ts),
        "attributes": {k: ds[k].value for k in _PIXEL_MODULE if k in ds},
        "pixel_data": ds.PixelData,
        "frames": frames,
    }
    return _run_child(payload, shape, timeout=timeout)


def _run_child(payload: dict[str, Any], shape: tuple[int, ...], *,
               timeout: float | None = None) -> Iterator[np.ndarray]:
    fd, path = tempfile.mkstemp(prefix="deid-px-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as fp:
            pickle.dump(payload, fp, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        proc = subprocess.Popen(
            [sys.executable, "-c", "import deid.pixels as p; p._child_main()", path, DECODER],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True,
        )
    except BaseException:
        os.unlink(path)
        raise
    try:
        assert proc.stdout is not None
        reader = _Reader(proc.stdout.fileno())
        limit = np.prod(shape) * 8
        for _ in range(payload["frames"]):
            deadline = time.monotonic() + (timeout or DECODE_TIMEOUT_SECONDS)
            header = reader.line(deadline)
            if "error" in header:
                raise _fail(str(header["error"]))
            dtype = np.dtype(str(header.get("dtype")))
            frame_shape = tuple(int(v) for v in header.get("shape", ()))
            if dtype.kind not in "iu" or frame_shape != shape:
                raise _fail("decoded frames do not match the image header")
            nbytes = int(np.prod(frame_shape)) * dtype.itemsize
            if nbytes > limit:
                raise _fail("decoded frames do not match the image header")
            data = reader.exact(nbytes, deadline)
            yield np.frombuffer(data, dtype=dtype).reshape(frame_shape)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        os.unlink(path)


class _Reader:
    """Read from a child's stdout with a deadline (select + os.read, no threads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _fail("decoding timed out")
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise _fail("decoding timed out")
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            raise _fail("decoder stopped unexpectedly")
        self.buffer += chunk

    def line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEADER:
                raise _fail("decoder sent garbage")
            self._fill(deadline)
        raw, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        try:
            header = json.loads(raw)
        except ValueError:
            raise _fail("decoder sent garbage") from None
        if not isinstance(header, dict):
            raise _fail("decoder sent garbage")
        return header

    def exact(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self._fill(deadline)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


def decode_frames(payload: dict[str, Any]) -> Iterator[np.ndarray]:
    """Child side: decode every frame with pydicom's pixel handlers, YBR -> RGB."""
    from pydicom.pixels import iter_pixels

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = payload["transfer_syntax"]
    for keyword, value in payload["attributes"].items():
        setattr(ds, keyword, value)
    ds.PixelData = payload["pixel_data"]
    yield from iter_pixels(ds, indices=range(payload["frames"]))


def _child_main() -> None:
    """Entry point of the decoding child: frames go to stdout as a JSON line + raw bytes."""
    out = sys.stdout.buffer
    try:
        path, decoder = sys.argv[1], sys.argv[2]
        with open(path, "rb") as fp:
            payload = pickle.load(fp)  # written by our parent, never by a client
        module, _, name = decoder.partition(":")
        decode = getattr(importlib.import_module(module), name)
        for frame in decode(payload):
            frame = np.ascontiguousarray(frame)
            if frame.dtype.kind == "b":
                frame = frame.astype(np.uint8)
            header = {"shape": list(frame.shape), "dtype": frame.dtype.str}
            out.write(json.dumps(header).encode() + b"\n")
            out.write(frame.tobytes())
            out.flush()
    except Exception as exc:  # noqa: BLE001 - only the class name crosses: no PHI
        reason = f"pixel data could not be decoded ({type(exc).__name__})"
        out.write(json.dumps({"error": reason}).encode() + b"\n")
        out.flush()
