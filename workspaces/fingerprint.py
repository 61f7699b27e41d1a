"""A fingerprint per buyer: every delivered copy of an instance differs by order, in ways
that survive copying, so a leaked file names the order it came from.

- Instance UIDs (study, series, SOP instance, frame of reference, the UIDs sequences refer
  to, MediaStorageSOPInstanceUID in the file meta) are remapped with a key of the order:
  HMAC of a key derived from SECRET_KEY and the order id, over the UID, shaped as
  ``2.25.<int>`` (deid.uids.remap_uid). Deterministic: a re-run writes the same bytes.
- A private block (group 0011, creator "MKT FINGERPRINT") holds an HMAC tag of the order
  id, never the id itself; trace_file() checks it against the delivered orders.
- The manifest carries the same tag in its "fingerprint" column.

If the private block was stripped, trace_file() looks the remapped SOPInstanceUID up among
the delivered files (DeliveryFile.sop_uid). Nothing here reads or adds a patient value:
the input is a catalog instance, de-identified and verified at ingestion.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, BinaryIO

from django.conf import settings

from deid.errors import DeidError
from deid.uids import remap_uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "MKT FINGERPRINT"
MARKER_ELEMENT = 0x01  # (0011,xx01) LO: the order's tag
MANIFEST_COLUMN = "fingerprint"
# The label keeps this key apart from everything else SECRET_KEY signs.
_KEY_LABEL = b"workspaces.fingerprint.v1"
_MAX_DEPTH = 32
# UI attributes naming a class, a syntax or a scheme rather than an instance: kept as
# they are (a value that is a registered DICOM UID is kept too).
_CLASS_UID_TAGS = frozenset({
    0x00020002,  # MediaStorageSOPClassUID
    0x00020010,  # TransferSyntaxUID
    0x00020012,  # ImplementationClassUID
    0x00080016,  # SOPClassUID
    0x0008001A,  # RelatedGeneralSOPClassUID
    0x0008001B,  # OriginalSpecializedSOPClassUID
    0x0008010C,  # CodingSchemeUID
    0x0008010D,  # ContextGroupExtensionCreatorUID
    0x00080062,  # SOPClassesInStudy
    0x00081150,  # ReferencedSOPClassUID
    0x00041510,  # ReferencedSOPClassUIDInFile
    0x00041512,  # ReferencedTransferSyntaxUIDInFile
})


class NotFingerprintableError(DeidError):
    """A catalog object that cannot be read as DICOM (the delivery fails with this reason)."""


# ---- keys ---------------------------------------------------------------------------------
def _base_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _secrets() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def order_uid_key(order_id: int, *, secret: str | None = None) -> bytes:
    return hmac.new(_base_key(secret or settings.SECRET_KEY), b"uid\x00" + str(order_id).encode(),
                    hashlib.sha256).digest()


def order_marker(order_id: int, *, secret: str | None = None) -> str:
    """The order's tag: 32 hex characters, the same for every file of the order."""
    return hmac.new(_base_key(secret or settings.SECRET_KEY), b"marker\x00" + str(order_id).encode(),
                    hashlib.sha256).hexdigest()[:32]


def fingerprint_uid(uid: str, *, order_id: int, key: bytes | None = None) -> str:
    """The UID a buyer of this order receives in place of the catalog's ``uid``."""
    return remap_uid(uid, key or order_uid_key(order_id))


# ---- the transform ------------------------------------------------------------------------
def fingerprint_raw(fp: BinaryIO, dst: IO[bytes], **kwargs: object) -> tuple[str, str, str] | None:
    """workspaces.fingerprint_raw.fingerprint_raw, imported when first called: it reads with
    deid.raw, which loads pydicom (see fingerprint_file). A module attribute, so tests can
    replace it to take the pydicom path."""
    from workspaces.fingerprint_raw import fingerprint_raw as raw

    return raw(fp, dst, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fingerprinted:
    study_uid: str
    series_uid: str
    sop_uid: str


def _is_instance_uid(tag: int, value: str) -> bool:
    from pydicom.uid import UID_dictionary  # imported when used (see fingerprint_file)

    return bool(value) and tag not in _CLASS_UID_TAGS and not (tag >> 16) % 2 and value not in UID_dictionary


def _remap_values(ds: Dataset, key: bytes, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise NotFingerprintableError("sequences nested too deep")
    for tag in list(ds.keys()):
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                _remap_values(item, key, depth + 1)
        elif elem.VR == "UI" and elem.value:
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            cleaned = [str(v).strip().rstrip("\x00") for v in values]
            mapped = [remap_uid(v, key) if _is_instance_uid(int(tag), v) else v for v in cleaned]
            if mapped != cleaned:
                elem.value = mapped if len(mapped) > 1 else mapped[0]


def fingerprint_file(src: BinaryIO | IO[bytes], dst: IO[bytes], *, order_id: int) -> Fingerprinted:
    """Write the order's copy of the DICOM file ``src`` to ``dst``: UIDs remapped with the
    order's key, the order's tag in a private block. Pixel data is copied raw, never held
    whole in memory; the same input and order give the same bytes. Byte level when the
    file allows (fingerprint_raw.py), else through pydicom: both write the same bytes."""
    # imported when used: deid's reader and writer load pydicom and numpy (about 40 MB),
    # which the web worker (it imports this module for order_marker and fingerprint_uid)
    # does not need; only the delivery task copies files.
    from deid.io import PARSE_ERRORS, open_source, read_dicom
    from deid.stream import write_rewritten

    key = order_uid_key(order_id)
    with open_source(src) as fp:
        fast = fingerprint_raw(fp, dst, key=key, class_uid_tags=_CLASS_UID_TAGS, private_group=PRIVATE_GROUP,
                               creator=PRIVATE_CREATOR, marker_element=MARKER_ELEMENT, marker=order_marker(order_id))
        if fast is not None:
            return Fingerprinted(*fast)
        fp.seek(0)
        try:
            parsed = read_dicom(fp, stream_pixels=True)
            ds, meta = parsed.dataset, parsed.meta
            _remap_values(ds, key)
            media_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip().rstrip("\x00")
            if media_uid:
                meta.MediaStorageSOPInstanceUID = remap_uid(media_uid, key)
            block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
            block.add_new(MARKER_ELEMENT, "LO", order_marker(order_id))
            result = Fingerprinted(study_uid=str(ds.get("StudyInstanceUID", "")),
                                   series_uid=str(ds.get("SeriesInstanceUID", "")),
                                   sop_uid=str(ds.get("SOPInstanceUID", "")))
            write_rewritten(fp, parsed.pixel, ds, meta, parsed.output_transfer_syntax, dst)
        except DeidError as exc:
            raise NotFingerprintableError(f"cannot fingerprint: {exc}") from None
        except PARSE_ERRORS as exc:
            raise NotFingerprintableError(f"cannot fingerprint: {type(exc).__name__}") from None
    return result


# ---- tracing a leaked file ----------------------------------------------------------------
@dataclass(frozen=True)
class TraceResult:
    found: bool
    how: str  # "private tag", "SOP Instance UID", or "" when not found
    order_id: int | None = None
    buyer: str = ""
    delivered: datetime | None = None
    message: str = ""


NOT_OURS = "not from this marketplace"


def _read_marks(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(the private tag's value or "", the SOPInstanceUID or "") of a file, header only."""
    from deid.io import read_dicom  # imported when used (see fingerprint_file)

    with open(path, "rb") as fp:
        parsed = read_dicom(fp, stream_pixels=True)
        ds = parsed.dataset
        marker = ""
        try:
            block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
            if MARKER_ELEMENT in block:  # type: ignore[operator]
                marker = str(block[MARKER_ELEMENT].value).strip()
        except KeyError:
            pass
        sop = str(ds.get("SOPInstanceUID", "") or "").strip().rstrip("\x00")
        if not sop:
            sop = str(parsed.meta.get("MediaStorageSOPInstanceUID", "") or "").strip().rstrip("\x00")
    return marker, sop


def _order_for_marker(marker: str, order_ids: Iterable[int]) -> int | None:
    secrets = _secrets()
    for order_id in order_ids:
        if any(hmac.compare_digest(order_marker(order_id, secret=s), marker) for s in secrets):
            return order_id
    return None


def trace_file(path: str | os.PathLike[str]) -> TraceResult:
    """Which order a (leaked) delivered file came from: the private tag checked against
    every delivered order, else its SOPInstanceUID among the delivered files."""
    from deid.io import PARSE_ERRORS  # imported when used (see fingerprint_file)
    from workspaces.models import Delivery, DeliveryFile

    try:
        marker, sop = _read_marks(path)
    except (DeidError, *PARSE_ERRORS):
        return TraceResult(found=False, how="", message=f"{NOT_OURS} (not a readable DICOM file)")
    order_id, how = None, ""
    if marker:
        order_id = _order_for_marker(marker, Delivery.objects.order_by("order_id").values_list("order_id", flat=True)
                                     .iterator(chunk_size=2000))
        how = "private tag"
    if order_id is None and sop:
        order_id = (DeliveryFile.objects.filter(sop_uid=sop).values_list("delivery__order_id", flat=True).first())
        how = "SOP Instance UID"
    if order_id is None:
        return TraceResult(found=False, how="", message=NOT_OURS)
    delivery = Delivery.objects.select_related("user").get(order_id=order_id)
    when = delivery.finished or delivery.created
    return TraceResult(found=True, how=how, order_id=order_id, buyer=delivery.user.get_username(), delivered=when,
                       message=f"order #{order_id}, buyer {delivery.user.get_username()}, delivered "
                               f"{when:%Y-%m-%d %H:%M} UTC (found by its {how})")
