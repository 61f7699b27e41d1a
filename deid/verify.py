"""Independent check of an output file against the identifying values of its input.

Deliberately shares no code with the engine (own tag list, own traversal): a bug in the
engine's rules must not also blind the check. Messages name tags, never values.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from deid.errors import PHIRemainsError

MIN_LEN = 3
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV"}
_PIXEL_GROUP = 0x7FE0

# tag -> kind. "person": whole value + each name component; "id"/"text": whole value;
# "date": the date in DICOM and ISO form; "uid": the exact UID.
IDENTIFYING: dict[int, str] = {
    0x00100010: "person",  # PatientName
    0x00101001: "person",  # OtherPatientNames
    0x00101005: "person",  # PatientBirthName
    0x00101060: "person",  # PatientMotherBirthName
    0x00080090: "person",  # ReferringPhysicianName
    0x00081048: "person",  # PhysiciansOfRecord
    0x00081050: "person",  # PerformingPhysicianName
    0x00081060: "person",  # NameOfPhysiciansReadingStudy
    0x00081070: "person",  # OperatorsName
    0x00321032: "person",  # RequestingPhysician
    0x00100020: "id",  # PatientID (also inside OtherPatientIDsSequence)
    0x00101000: "id",  # OtherPatientIDs
    0x00080050: "id",  # AccessionNumber
    0x00200010: "id",  # StudyID
    0x00380010: "id",  # AdmissionID
    0x00102154: "id",  # PatientTelephoneNumbers
    0x00080094: "id",  # ReferringPhysicianTelephoneNumbers
    0x00080080: "text",  # InstitutionName
    0x00080081: "text",  # InstitutionAddress
    0x00081040: "text",  # InstitutionalDepartmentName
    0x00080092: "text",  # ReferringPhysicianAddress
    0x00101040: "text",  # PatientAddress
    0x00100030: "date",  # PatientBirthDate
    0x0020000D: "uid",  # StudyInstanceUID
    0x0020000E: "uid",  # SeriesInstanceUID
    0x00080018: "uid",  # SOPInstanceUID
    0x00200052: "uid",  # FrameOfReferenceUID
    0x00081155: "uid",  # ReferencedSOPInstanceUID
}


@dataclass(frozen=True)
class Needle:
    source: int  # tag the value came from (named in raw-byte findings)
    pattern: re.Pattern[str]


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _walk(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, str, object]]:
    """(tag, VR, value) of every element at any depth, private ones included."""
    if depth > 64:
        return
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _walk(item, depth + 1)
        else:
            yield int(elem.tag), str(elem.VR), elem.value


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value).decode("latin-1")]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [t for v in value for t in _texts(v)]  # type: ignore[attr-defined]
    return [str(value)]


def _needles_for(tag: int, kind: str, text: str) -> list[Needle]:
    text = text.strip().strip("\x00")
    if len(text) < MIN_LEN:
        return []
    out: list[str] = []
    if kind == "uid":
        return [Needle(tag, re.compile(rf"(?<![0-9.]){re.escape(text)}(?![0-9.])"))]
    if kind == "date":
        m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
        dates = [text] + ([f"{m[1]}-{m[2]}-{m[3]}"] if m else [])
        return [Needle(tag, re.compile(rf"(?<!\d){re.escape(d)}(?!\d)")) for d in dates]
    words: list[str] = []
    if kind == "person":
        words = [p for p in re.split(r"[\^=\s,]+", text) if len(p) >= MIN_LEN]
    # Short whole values match as words only; "123" inside "0.123" is no leak.
    (out if len(text) >= 6 else words).append(text)
    needles = [Needle(tag, re.compile(re.escape(s), re.IGNORECASE)) for s in out]
    needles += [
        Needle(tag, re.compile(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])", re.IGNORECASE))
        for w in words
    ]
    return needles


# An institution value that is part of the vendor's own name ("TOSHIBA" next to
# Manufacturer "TOSHIBA_MEC") names the device maker, which Retain Device Identity keeps.
_DEVICE_KEYWORDS = ("Manufacturer", "ManufacturerModelName")


def collect_needles(original: Dataset) -> list[Needle]:
    """Identifying values of the INPUT, as search patterns."""
    device = " ".join(str(original.get(k, "") or "") for k in _DEVICE_KEYWORDS).lower()
    needles: list[Needle] = []
    for tag, vr, value in _walk(original):
        kind = IDENTIFYING.get(tag) or ("person" if vr == "PN" else None)
        if kind is None:
            continue
        for text in _texts(value):
            if kind == "text" and text.strip() and re.search(
                rf"(?<![a-z0-9]){re.escape(text.strip().lower())}", device
            ):
                continue
            needles += _needles_for(tag, kind, text)
    return needles


def _scrubbed_bytes(data: bytes) -> str:
    """Output bytes with pixel data and large binary values blanked (random bytes match
    short patterns by chance), as latin-1 text for regex search."""
    buffer = bytearray(data)
    ds = dcmread(io.BytesIO(data), defer_size=512)
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue
        if raw.VR not in _BINARY_VRS and tag.group != _PIXEL_GROUP:
            continue
        length = raw.length if raw.length != 0xFFFFFFFF else len(raw.value or b"")
        buffer[raw.value_tell: raw.value_tell + length] = b"\x00" * length
    return buffer.decode("latin-1")


def verify_output(original: Dataset, data: bytes) -> None:
    """Raise PHIRemainsError if any identifying input value appears in ``data``."""
    needles = collect_needles(original)
    if not needles:
        return
    output = dcmread(io.BytesIO(data))
    for tag, vr, value in _walk(output):
        if tag >> 16 == _PIXEL_GROUP:
            continue
        for text in _texts(value):
            if vr in _BINARY_VRS and len(text) > 512:
                continue  # bulk binary: covered (sensibly) by nothing; see _scrubbed_bytes
            for needle in needles:
                if needle.pattern.search(text):
                    raise PHIRemainsError(f"verification failed: identifying value remains in {_tag(tag)}")
    haystack = _scrubbed_bytes(data)
    for needle in needles:
        raw = needle.pattern.pattern.encode("utf-8").decode("latin-1")
        if re.search(raw, haystack, needle.pattern.flags):
            raise PHIRemainsError(
                f"verification failed: identifying value from {_tag(needle.source)} remains in output bytes"
            )
