"""The byte-level fingerprint (workspaces/fingerprint_raw.py) against the pydicom path.

Delivered files are the de-identifier's output; on each one the byte-level path takes it
must write what the pydicom path writes: the same bytes, or, where the input has a text
value with extra padding (kept as it was here, re-padded by pydicom), the same value in
every element. Files it does not take go to the pydicom path with nothing written."""
from __future__ import annotations

import functools
import io
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from deid import DeidError, Options, deidentify_file
from workspaces import fingerprint
from workspaces.fingerprint import PRIVATE_CREATOR, PRIVATE_GROUP, fingerprint_file
from workspaces.fingerprint_raw import fingerprint_raw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deid"))
from deid_factory import KEY, elements_of, make_dataset, to_bytes  # noqa: E402
from phi_corpus import all_cases  # noqa: E402

ORDER_ID = 4242


def _deidentified(data: bytes) -> bytes | None:
    out = io.BytesIO()
    try:
        deidentify_file(io.BytesIO(data), out, key=KEY, options=Options(accept_burned_in_risk=True))
    except DeidError:
        return None
    return out.getvalue()


@functools.cache
def inputs() -> dict[str, bytes]:
    """What delivery reads: de-identified copies of pydicom's files and the PHI corpus."""
    found: dict[str, bytes] = {}
    for path in sorted(set(get_testdata_files("*.dcm"))):
        with open(path, "rb") as f:
            data = _deidentified(f.read())
        if data:
            found[Path(path).name] = data
    for case in all_cases():
        data = _deidentified(case.data)
        if data:
            found[f"corpus:{case.name}"] = data
    return found


def _raw_path(data: bytes) -> tuple[tuple[str, str, str] | None, bytes]:
    out = io.BytesIO()
    result = fingerprint_raw(io.BytesIO(data), out, key=fingerprint.order_uid_key(ORDER_ID),
                             class_uid_tags=fingerprint._CLASS_UID_TAGS, private_group=PRIVATE_GROUP,
                             creator=PRIVATE_CREATOR, marker_element=fingerprint.MARKER_ELEMENT,
                             marker=fingerprint.order_marker(ORDER_ID))
    return result, out.getvalue()


def _pydicom_path(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[fingerprint.Fingerprinted, bytes]:
    with monkeypatch.context() as patch:
        patch.setattr(fingerprint, "fingerprint_raw", lambda *args, **kwargs: None)
        out = io.BytesIO()
        result = fingerprint_file(io.BytesIO(data), out, order_id=ORDER_ID)
    return result, out.getvalue()


def test_both_paths_write_the_same_file_on_every_file_the_byte_path_takes(monkeypatch):
    taken, same_bytes = [], 0
    for name, data in inputs().items():
        result, output = _raw_path(data)
        if result is None:
            assert output == b"", f"{name}: the byte path wrote before giving up"
            continue
        taken.append(name)
        expected, expected_output = _pydicom_path(data, monkeypatch)
        assert fingerprint.Fingerprinted(*result) == expected, name
        if output == expected_output:
            same_bytes += 1
        else:
            assert elements_of(output) == elements_of(expected_output), name
    # Nearly every de-identified file is explicit VR little endian without trailing elements.
    assert len(taken) >= 0.8 * len(inputs()), (len(taken), len(inputs()))
    assert same_bytes >= 0.9 * len(taken), (same_bytes, len(taken))


def test_the_copy_has_new_instance_uids_the_order_tag_and_the_same_pixels():
    data = inputs()["CT_small.dcm"]
    result, output = _raw_path(data)
    assert result is not None
    before, after = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(output))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert getattr(after, keyword) != getattr(before, keyword)
        assert getattr(after, keyword).startswith("2.25.")
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    assert after.SOPClassUID == before.SOPClassUID  # a class, not an instance
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    block = after.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert block[fingerprint.MARKER_ELEMENT].value == fingerprint.order_marker(ORDER_ID)
    assert after.PixelData == before.PixelData
    assert result == (after.StudyInstanceUID, after.SeriesInstanceUID, after.SOPInstanceUID)


def test_uids_inside_sequences_are_remapped_and_kept_consistent():
    ds = make_dataset()
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = [ref]
    data = _deidentified(to_bytes(ds))
    result, output = _raw_path(data)
    assert result is not None
    after = pydicom.dcmread(io.BytesIO(output))
    item = after.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == after.SOPInstanceUID  # the same key maps the same UID
    assert item.ReferencedSOPClassUID == after.SOPClassUID


def test_a_file_with_the_private_group_in_use_goes_to_the_pydicom_path():
    ds = pydicom.dcmread(io.BytesIO(inputs()["CT_small.dcm"]))
    ds.private_block(PRIVATE_GROUP, "SOMEONE ELSE", create=True).add_new(0x01, "LO", "x")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    result, output = _raw_path(buf.getvalue())
    assert result is None and output == b""
    out = io.BytesIO()
    fingerprint_file(io.BytesIO(buf.getvalue()), out, order_id=ORDER_ID)
    copy = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert copy.SOPInstanceUID == fingerprint.fingerprint_uid(ds.SOPInstanceUID, order_id=ORDER_ID)
    out = io.BytesIO()
    fingerprint_file(io.BytesIO(buf.getvalue()), out, order_id=ORDER_ID)  # still fingerprinted
    copy = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert copy.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[fingerprint.MARKER_ELEMENT].value == \
        fingerprint.order_marker(ORDER_ID)
    assert copy.private_block(PRIVATE_GROUP, "SOMEONE ELSE")[0x01].value == "x"


def test_an_implicit_vr_file_goes_to_the_pydicom_path():
    ds = pydicom.dcmread(io.BytesIO(inputs()["CT_small.dcm"]))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
    result, output = _raw_path(buf.getvalue())
    assert result is None and output == b""
    out = io.BytesIO()
    fingerprint_file(io.BytesIO(buf.getvalue()), out, order_id=ORDER_ID)
    copy = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert copy.SOPInstanceUID == fingerprint.fingerprint_uid(ds.SOPInstanceUID, order_id=ORDER_ID)


def test_a_file_with_elements_after_the_pixel_data_and_a_character_set_is_fingerprinted():
    """The pydicom path writes those elements after the raw pixel copy, in the file's
    character set (it used to fail reading the character set)."""
    ds = pydicom.dcmread(io.BytesIO(inputs()["CT_small.dcm"]))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # Data Set Trailing Padding
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert _raw_path(buf.getvalue())[0] is None
    out = io.BytesIO()
    fingerprint_file(io.BytesIO(buf.getvalue()), out, order_id=ORDER_ID)
    copy = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert copy.PixelData == ds.PixelData and copy[0xFFFCFFFC].value == b"\x00" * 8
