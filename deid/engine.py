"""Apply the PS3.15 profile (deid/data) to a parsed data set and write the result."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from deid import dates, fast, pixels, stream, uids
from deid.clean import Scrubber
from deid.decide import (
    CAP_AGE,
    CLEAN_PATIENT_TEXT,
    CLEAN_TEXT,
    DROP,
    DUMMY,
    EMPTY,
    KEEP,
    PSEUDONYM,
    RECURSE,
    REMAP,
    REMOVE,
    SHIFT_DATE,
    Action,
    decide,
)
from deid.errors import BurnedInAnnotationError, DeidError, MalformedDicomError, UnsupportedError
from deid.io import (
    DICOMDIR_SOP_CLASS,
    MAX_ELEMENTS,
    PARSE_ERRORS,
    Source,
    atomic_output,
    open_source,
    read_dicom,
    write_dicom,
)
from deid.profile import Options, Profile, describe, load_profile, method_codes
from deid.report import DeidReport, build_metadata, dataset_getter
from deid.values import (
    DUMMY_VALUES,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    PATIENT_ID,
    cap_age,
    cleaned_texts,
    patient_seed,
    shifted_dates,
    values_of,
)
from deid.verify import verify_output
from deid.walk import check_depth, raw_vr

_PIXEL_DATA = 0x7FE00010


class _NeedsPixels(Exception):
    """The image is to be masked: re-read it with its pixel data (full path)."""


@dataclass
class _Context:
    key: bytes
    options: Options
    profile: Profile
    scrubber: Scrubber
    shift: int | None
    pseudonym: str
    counts: Counter[str]
    elements: int = 0


def deidentify_file(src: Source, dst: str | os.PathLike[str] | BinaryIO | IO[bytes], *,
                    key: bytes, options: Options | None = None) -> DeidReport:
    """De-identify one uploaded DICOM file.

    Writes the clean Part 10 file to ``dst`` only after verification passed; raises a
    DeidError subclass (PHI-free message) otherwise, leaving no output behind.
    """
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("key must be at least 16 bytes")
    options = options or Options()
    with open_source(src) as fp:
        start = fp.tell()
        try:
            # Ordinary files: the profile on raw elements, pixel data copied (fast.py).
            fast_report = fast.deidentify_raw(fp, dst, key=key, options=options) if start == 0 else None
        except DeidError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file must only ever be a DeidError
            raise MalformedDicomError(f"cannot process data set: {type(exc).__name__}") from None
        if fast_report is not None:
            return fast_report
        fp.seek(start)
        # Otherwise pydicom: the header is parsed, the pixel data value copied raw where
        # the transfer syntax allows (stream.py), all of it parsed where not.
        try:
            parsed = read_dicom(fp, stream_pixels=True)
            try:
                out, meta, transfer_syntax, report = _deidentify(
                    parsed.dataset, parsed.output_transfer_syntax, key=key, options=options,
                    streaming=parsed.pixel is not None)
            except _NeedsPixels:
                fp.seek(start)
                parsed = read_dicom(fp)
                out, meta, transfer_syntax, report = _deidentify(
                    parsed.dataset, parsed.output_transfer_syntax, key=key, options=options)
            if parsed.pixel is not None:
                # Verifies the header in full and scans the pixel bytes while copying.
                stream.write_streamed(fp, parsed.pixel, parsed.dataset, out, meta,
                                      transfer_syntax, dst)
                report.verified = True
                return report
            data = write_dicom(out, meta, transfer_syntax)
            # Independent second look at the output bytes before anything leaves here.
            verify_output(parsed.dataset, data)
            stream.scan_pixels(parsed.dataset, out)  # as the fast path does while copying
        except DeidError:
            raise
        except PARSE_ERRORS as exc:
            raise MalformedDicomError(f"malformed data set: {type(exc).__name__}") from None
        except Exception as exc:  # noqa: BLE001 - one odd file must only ever be a DeidError
            raise MalformedDicomError(f"cannot process data set: {type(exc).__name__}") from None
    report.verified = True
    _write(dst, data)
    return report


def _write(dst: str | os.PathLike[str] | BinaryIO | IO[bytes], data: bytes) -> None:
    if isinstance(dst, (str, os.PathLike)):
        with atomic_output(dst) as out:
            out.write(data)
    else:
        dst.write(data)


def _patient_seed(ds: Dataset) -> str:
    return patient_seed(str(ds.get("PatientID", "") or ""),
                        str(ds.get("StudyInstanceUID", "") or ""))


def _deidentify(ds: FileDataset, transfer_syntax: UID, *, key: bytes, options: Options,
                streaming: bool = False) -> tuple[Dataset, FileMetaDataset, UID, DeidReport]:
    # Some writers put the SOP identity only in the file meta; take it from there.
    for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                  ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(ds.get(keyword, "") or "").strip():
            fallback = str(ds.file_meta.get(meta_keyword, "") or "").strip()
            if fallback:
                setattr(ds, keyword, fallback)
        if not str(ds.get(keyword, "") or "").strip():
            raise MalformedDicomError(f"missing required attribute {keyword}")
    if str(ds.SOPClassUID).strip() == DICOMDIR_SOP_CLASS:
        raise UnsupportedError("DICOMDIR (a media directory listing other files and their "
                               "patients): not copied; de-identify the files it lists")
    decision = pixels.decide(ds, options)
    if decision.action == "reject":
        raise BurnedInAnnotationError(decision.reason)
    if decision.action == "mask" and streaming:
        raise _NeedsPixels  # masking decodes pixels: only on the full path

    seed = _patient_seed(ds)
    ctx = _Context(
        key=key,
        options=options,
        profile=load_profile(),
        scrubber=Scrubber.from_dataset(ds),
        shift=dates.shift_days(seed, key) if options.retain_longitudinal_modified_dates else None,
        pseudonym=uids.patient_pseudonym(seed, key),
        counts=Counter(),
    )
    out = _process(ds, ctx, depth=0)
    # Buyers group by patient: every output carries the pseudonym, even when the input
    # had no PatientID (then the pseudonym is per study, see _patient_seed).
    if "PatientID" not in out:
        out.PatientID = ctx.pseudonym
        out.PatientName = ctx.pseudonym
        ctx.counts["pseudonymized"] += 2
    pixels_cleaned = False
    if decision.action == "mask":
        transfer_syntax = _mask(out, decision, transfer_syntax, ctx)
        pixels_cleaned = True
    _attest(out, options, ctx, pixels_cleaned=pixels_cleaned)

    for keyword, tag in (("SOPClassUID", "(0008,0016)"), ("SOPInstanceUID", "(0008,0018)")):
        if keyword not in out:  # present, but written with another VR than UI
            raise MalformedDicomError(f"{tag} {keyword} is not a UID: the instance cannot be identified")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    report = DeidReport(
        metadata=build_metadata(dataset_getter(out), str(transfer_syntax),
                                has_pixels="PixelData" in out),
        actions=dict(sorted(ctx.counts.items())),
        profile=describe(options),
        method_codes=[code for code, _ in method_codes(options, pixels_cleaned=pixels_cleaned)],
    )
    return out, meta, transfer_syntax, report


def _mask(out: Dataset, decision: pixels.PixelDecision, transfer_syntax: UID,
          ctx: _Context) -> UID:
    """Blank burned-in text in the OUTPUT data set's pixels; return the output syntax."""
    if _PIXEL_DATA not in out or decision.rule is None:
        raise UnsupportedError("pixel masking needs PixelData and a masking rule")
    elem = out[_PIXEL_DATA]
    # A fresh element: the input data set's PixelData (verified against) stays as read.
    out[_PIXEL_DATA] = DataElement(_PIXEL_DATA, elem.VR, elem.value)
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = transfer_syntax  # what the pixel bytes are in now
    masked_syntax = UID(pixels.mask(out, decision.rule))
    out.BurnedInAnnotation = "NO"
    ctx.counts["pixels_masked"] += 1
    return masked_syntax


def _process(ds: Dataset, ctx: _Context, depth: int) -> Dataset:
    """Return a new data set holding only what the profile lets through."""
    check_depth(depth)
    out = Dataset()
    keep_creators: set[BaseTag] = set()
    options, top = ctx.options, depth == 0
    for tag in list(ds.keys()):
        ctx.elements += 1
        if ctx.elements > MAX_ELEMENTS:
            raise MalformedDicomError("too many data elements")
        creator_tag = creator = None
        if tag.group % 2 and options.retain_safe_private and tag.element >= 0x1000:
            creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
            holder = ds.get(creator_tag)
            creator = str(holder.value).strip().lower() if holder is not None else ""
            vr = ds[tag].VR  # as pydicom reads it (its private dictionary: implicit VR)
        else:
            vr = raw_vr(ds, tag)
        action = decide(tag, vr, options, top=top, creator=creator)
        _apply(ds, tag, vr, action, out, ctx, depth)
        if action.creator and creator_tag is not None:
            keep_creators.add(creator_tag)
    for creator_tag in keep_creators:
        out.add(ds[creator_tag])
    return out


def _apply(ds: Dataset, tag: BaseTag, vr: str, action: Action, out: Dataset, ctx: _Context,
           depth: int) -> None:
    """Carry out decide()'s action for one element."""
    op, count = action.op, action.count
    if op == KEEP:
        out.add(ds[tag])
    elif op in (DROP, REMOVE):
        pass
    elif op == PSEUDONYM:
        out.add_new(tag, "LO" if tag == PATIENT_ID else "PN", ctx.pseudonym)
    elif op == RECURSE:
        _recurse(ds[tag], out, ctx, depth)
    elif op == REMAP:
        _remap(ds[tag], out, ctx)
    elif op == EMPTY:
        out.add_new(tag, vr, Sequence() if vr == "SQ" else None)
    elif op == DUMMY:
        out.add_new(tag, vr, DUMMY_VALUES[vr])
    elif op == CAP_AGE:
        out.add(DataElement(tag, vr, cap_age(ds[tag].value)))
    elif op == SHIFT_DATE:
        assert ctx.shift is not None
        elem = ds[tag]
        shifted = shifted_dates(vr, values_of(elem.value), ctx.shift)
        if shifted is None:  # unparseable: removed, a date cannot be kept unshifted
            count = "removed"
        else:
            _store(out, elem, shifted)
    elif op == CLEAN_TEXT or (op == CLEAN_PATIENT_TEXT and ctx.scrubber.names_verifiable):
        elem = ds[tag]
        _store(out, elem, cleaned_texts(ctx.scrubber, values_of(elem.value)))
    elif op == CLEAN_PATIENT_TEXT:  # the file's names cannot be verified: removed
        count = "removed"
    else:  # pragma: no cover - decide() returns only the operations above
        raise ValueError(f"unknown operation {op}")
    if count is not None:
        ctx.counts[count] += 1


def _recurse(elem: DataElement, out: Dataset, ctx: _Context, depth: int) -> None:
    items = [_process(item, ctx, depth + 1) for item in elem.value or []]
    out.add_new(elem.tag, "SQ", Sequence(items))


def _store(out: Dataset, elem: DataElement, values: list[Any]) -> None:
    value: Any = values[0] if len(values) == 1 else (values or None)
    out.add_new(elem.tag, elem.VR, value)


def _remap(elem: DataElement, out: Dataset, ctx: _Context) -> None:
    _store(out, elem, [uids.remap_uid(str(v), ctx.key) for v in values_of(elem.value)])
    ctx.counts["uid_remapped"] += 1


def _attest(out: Dataset, options: Options, ctx: _Context, *,
            pixels_cleaned: bool = False) -> None:
    """PS3.15 E.1.1: say what was done, in the data set itself."""
    codes = method_codes(options, pixels_cleaned=pixels_cleaned)
    out.PatientIdentityRemoved = "YES"
    # LO values are capped at 64 characters: one value per profile/option name.
    out.DeidentificationMethod = [meaning.removesuffix(" Option")[:64] for _, meaning in codes]
    items = []
    for code, meaning in codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    out.LongitudinalTemporalInformationModified = "MODIFIED" if ctx.shift is not None else "REMOVED"
