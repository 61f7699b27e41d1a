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
from deid.errors import BurnedInAnnotationError, DeidError, MalformedDicomError, UnsupportedError
from deid.io import (
    DICOMDIR_SOP_CLASS, MAX_ELEMENTS, PARSE_ERRORS, Source, atomic_output, open_source, read_dicom,
    write_dicom,
)
from deid.profile import (
    CLEAN, DUMMY, KEEP, REMOVE, UID as UID_ACTION, ZERO, Options, Profile, describe,
    load_profile, method_codes, safe_private_vr,
)
from deid.report import DeidReport, build_metadata, dataset_getter
from deid.verify import verify_output
from deid.values import (
    DUMMY_VALUES, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, PATIENT_AGE, PATIENT_ID,
    PATIENT_NAME, TEXT_VRS, cap_age, cleaned_texts, patient_seed, shifted_dates, values_of,
)
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
    for tag in list(ds.keys()):
        ctx.elements += 1
        if ctx.elements > MAX_ELEMENTS:
            raise MalformedDicomError("too many data elements")
        group, element = tag.group, tag.element
        if element == 0 or group == 0x0002:
            continue  # group lengths are recomputed; file meta is rebuilt
        if group % 2 == 1:
            _private(ds, tag, out, keep_creators, ctx, depth)
            continue
        if group & 0xFF00 in (0x5000, 0x6000):
            ctx.counts["overlay_removed"] += 1  # curves (50xx) and overlays (60xx)
            continue
        if depth == 0 and tag in (PATIENT_ID, PATIENT_NAME):
            out.add_new(tag, "LO" if tag == PATIENT_ID else "PN", ctx.pseudonym)
            ctx.counts["pseudonymized"] += 1
            continue
        action = ctx.profile.action_for(tag, ctx.options)
        if action is None:
            action = KEEP if tag in ctx.profile.allowed else REMOVE
        _apply(ds, tag, action, out, ctx, depth)
    for creator in keep_creators:
        out.add(ds[creator])
    return out


def _private(ds: Dataset, tag: BaseTag, out: Dataset, keep_creators: set[BaseTag],
             ctx: _Context, depth: int) -> None:
    if ctx.options.retain_safe_private and 0x1000 <= tag.element:
        creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
        creator = ds.get(creator_tag)
        name = str(creator.value).strip().lower() if creator is not None else ""
        listed_vr = ctx.profile.safe_private.get((tag.group, name, tag.element & 0xFF))
        if listed_vr is not None and _keep_safe_private(ds[tag], listed_vr, out, ctx, depth):
            keep_creators.add(creator_tag)
            ctx.counts["private_kept"] += 1
            return
    ctx.counts["private_removed"] += 1


def _keep_safe_private(elem: DataElement, listed_vr: str, out: Dataset, ctx: _Context,
                       depth: int) -> bool:
    """Keep a safe private attribute as the profile keeps public ones: a sequence with
    the profile applied to its items, UIDs remapped. One whose VR is not the table's is
    not the attribute the table lists (UN included: its VR unknown): removed."""
    if not safe_private_vr(elem.VR, listed_vr):
        return False
    if elem.VR == "SQ":
        _recurse(elem, out, ctx, depth)
    elif elem.VR == "UI":
        _remap(elem, out, ctx)
    else:
        out.add(elem)
    return True


def _apply(ds: Dataset, tag: BaseTag, action: str, out: Dataset, ctx: _Context,
           depth: int) -> None:
    vr = raw_vr(ds, tag)
    counts = ctx.counts
    if action == REMOVE:
        counts["removed"] += 1
    elif action == ZERO:
        out.add_new(tag, vr, Sequence() if vr == "SQ" else None)
        counts["zeroed"] += 1
    elif action == DUMMY:
        if vr == "UI":
            _remap(ds[tag], out, ctx)
        elif vr == "SQ":
            out.add_new(tag, vr, Sequence())  # no sensible dummy item: empty sequence
            counts["dummied"] += 1
        elif vr in DUMMY_VALUES:
            out.add_new(tag, vr, DUMMY_VALUES[vr])
            counts["dummied"] += 1
        else:
            counts["removed"] += 1
    elif action == KEEP:
        if vr == "SQ":
            _recurse(ds[tag], out, ctx, depth)
        else:
            elem = ds[tag]
            if tag == PATIENT_AGE:
                elem = DataElement(tag, vr, cap_age(elem.value))
            out.add(elem)
        counts["kept"] += 1
    elif action == CLEAN:
        _clean(ds[tag], vr, out, ctx, depth)
    elif action == UID_ACTION:
        if vr == "UI":
            _remap(ds[tag], out, ctx)
        elif vr == "SQ":
            _recurse(ds[tag], out, ctx, depth)
        else:
            counts["removed"] += 1
    else:  # pragma: no cover - profile data validated by tests
        raise ValueError(f"unknown action {action}")


def _recurse(elem: DataElement, out: Dataset, ctx: _Context, depth: int) -> None:
    items = [_process(item, ctx, depth + 1) for item in elem.value or []]
    out.add_new(elem.tag, "SQ", Sequence(items))


def _store(out: Dataset, elem: DataElement, values: list[Any]) -> None:
    value: Any = values[0] if len(values) == 1 else (values or None)
    out.add_new(elem.tag, elem.VR, value)


def _remap(elem: DataElement, out: Dataset, ctx: _Context) -> None:
    _store(out, elem, [uids.remap_uid(str(v), ctx.key) for v in values_of(elem.value)])
    ctx.counts["uid_remapped"] += 1


def _clean(elem: DataElement, vr: str, out: Dataset, ctx: _Context, depth: int) -> None:
    counts = ctx.counts
    if vr == "SQ":
        _recurse(elem, out, ctx, depth)
        counts["cleaned"] += 1
    elif vr in ("DA", "DT", "TM"):
        if ctx.shift is None:
            counts["removed"] += 1
            return
        if vr == "TM":  # whole-day shifts leave times valid
            out.add(elem)
            counts["kept"] += 1
            return
        shifted = shifted_dates(vr, values_of(elem.value), ctx.shift)
        if shifted is None:
            counts["removed"] += 1
            return
        _store(out, elem, shifted)
        counts["date_shifted"] += 1
    elif vr in TEXT_VRS:
        _store(out, elem, cleaned_texts(ctx.scrubber, values_of(elem.value)))
        counts["cleaned"] += 1
    else:
        counts["removed"] += 1


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
