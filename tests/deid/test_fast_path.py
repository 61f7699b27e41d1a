"""The fast path (deid/fast.py on raw elements) against the pydicom path (deid/engine.py).

The fast path must give what the pydicom path gives — same output, same report — on
every file it takes, and must leave every other file to the pydicom path.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from deid_factory import KEY, elements_of, make_dataset, to_bytes
from phi_corpus import all_cases
from pydicom.data import get_testdata_files
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from deid import DeidError, Options, deidentify_file, fast
from deid.raw import NotRaw, read_header, text
from deid.verify import collect_needles, collect_needles_from_bytes, needles_from_walked
from deid.verify_stream import PixelScanner
from deid.verify_walk import Unwalkable, walk

OPTION_SETS = [
    Options(),
    Options(retain_safe_private=True, retain_device_identity=True),
    Options(retain_longitudinal_modified_dates=False, clean_descriptors=False,
            retain_patient_characteristics=False),
]
CASES = {case.name: case.data for case in all_cases()}


def _fast(data: bytes, options: Options) -> tuple[object, bytes]:
    out = io.BytesIO()
    try:
        report = fast.deidentify_raw(io.BytesIO(data), out, key=KEY, options=options)
    except DeidError as exc:
        return ("rejected", str(exc)), b""
    return report, out.getvalue()


def _pydicom_path(data: bytes, options: Options, monkeypatch: pytest.MonkeyPatch) -> tuple[object, bytes]:
    with monkeypatch.context() as patch:
        patch.setattr(fast, "deidentify_raw", lambda *args, **kwargs: None)
        out = io.BytesIO()
        try:
            report = deidentify_file(io.BytesIO(data), out, key=KEY, options=options)
        except DeidError as exc:
            return ("rejected", str(exc)), b""
    return report, out.getvalue()


@pytest.mark.parametrize("options", OPTION_SETS, ids=["default", "retain-more", "retain-less"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_writes_the_same_bytes_as_the_pydicom_path(
        name: str, options: Options, monkeypatch: pytest.MonkeyPatch) -> None:
    data = CASES[name]
    report, output = _fast(data, options)
    if report is None:
        pytest.skip(f"{name}: not a file for the fast path")
    assert (report, output) == _pydicom_path(data, options, monkeypatch)


def test_fast_path_takes_the_ordinary_files() -> None:
    taken = [name for name, data in CASES.items() if _fast(data, Options())[0] is not None]
    assert len(taken) >= len(CASES) - 6
    report, output = _fast(to_bytes(make_dataset()), Options())
    assert report is not None and report.verified and output


BUNDLED = sorted(set(get_testdata_files("*.dcm")))


def test_bundled_files_read_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's test files: kept values keep the input's padding on the fast path (so
    bytes may differ by a padding space); every value read back is the same."""
    options = Options(accept_burned_in_risk=True)
    taken = 0
    for path in BUNDLED:
        with open(path, "rb") as f:
            data = f.read()
        report, output = _fast(data, options)
        if report is None:
            continue
        taken += 1
        expected_report, expected_output = _pydicom_path(data, options, monkeypatch)
        assert report == expected_report, path
        if output:
            assert elements_of(output) == elements_of(expected_output), path
    assert taken >= 40  # most bundled files are explicit VR little endian


def _implicit() -> bytes:
    return to_bytes(make_dataset(), ImplicitVRLittleEndian)


def _big_endian() -> bytes:
    return to_bytes(make_dataset(), ExplicitVRBigEndian)


def _deflated() -> bytes:
    return to_bytes(make_dataset(), DeflatedExplicitVRLittleEndian)


def _iso2022() -> bytes:
    return CASES["charset-iso2022-ir87"]


def _trailing() -> bytes:
    return CASES["trailing-padding"]


def _ultrasound() -> bytes:
    from pydicom.uid import UltrasoundImageStorage
    return to_bytes(make_dataset(Modality="US", SOPClassUID=UltrasoundImageStorage))


def _public_un() -> bytes:
    data = to_bytes(make_dataset())
    at = data.index(b"\x08\x00\x70\x00LO")  # Manufacturer, written again as UN
    length = struct.unpack_from("<H", data, at + 6)[0]
    value = data[at + 8:at + 8 + length]
    return data[:at] + struct.pack("<HH2sHI", 8, 0x70, b"UN", 0, length) + value + data[at + 8 + length:]


def _item_charset() -> bytes:
    ds = make_dataset()
    ds.RequestAttributesSequence[0].SpecificCharacterSet = "ISO_IR 192"  # its own
    return to_bytes(ds)


@pytest.mark.parametrize("build", [_implicit, _big_endian, _deflated, _iso2022, _trailing,
                                   _ultrasound, _public_un, _item_charset])
def test_other_files_are_left_to_the_pydicom_path(build) -> None:  # type: ignore[no-untyped-def]
    data = build()
    if build is _ultrasound:  # burned-in risk: rejected or masked, never on the fast path
        options = Options(clean_pixel_data=False)
        with pytest.raises(DeidError, match="ultrasound"):
            fast.deidentify_raw(io.BytesIO(data), io.BytesIO(), key=KEY, options=options)
        return
    assert fast.deidentify_raw(io.BytesIO(data), io.BytesIO(), key=KEY, options=Options()) is None
    report = deidentify_file(io.BytesIO(data), io.BytesIO(), key=KEY)  # and it still works
    assert report.verified


def test_truncated_files_take_the_pydicom_path() -> None:
    """Cut anywhere: the fast path declines, the pydicom path decides (test_hostile.py)."""
    data = to_bytes(make_dataset())
    for cut in range(200, len(data) - 1, 97):
        assert fast.deidentify_raw(io.BytesIO(data[:cut]), io.BytesIO(), key=KEY,
                                   options=Options()) is None


# --- the verifier's own reading -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_verifier_collects_the_same_needles_from_bytes_as_from_pydicom(name: str) -> None:
    data = CASES[name]
    try:
        from_bytes = collect_needles_from_bytes(data)
    except Unwalkable:
        pytest.skip(f"{name}: the verifier's reader leaves it to pydicom")
    from_pydicom = collect_needles(pydicom.dcmread(io.BytesIO(data)))
    assert {(n.source, n.pattern.pattern) for n in from_bytes} == {
        (n.source, n.pattern.pattern) for n in from_pydicom}
    assert from_bytes  # every case has identifying values


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_collects_the_same_needles_from_its_parse_as_pydicom(name: str) -> None:
    """The fast path's needles come from raw.py's parse of the input, as the pydicom
    path's come from pydicom's: both must find the same identifying values."""
    data = CASES[name]
    try:
        parsed = read_header(io.BytesIO(data))
        charset = text(next((e for e in parsed.elements if e.tag == 0x00080005), None))
        codec = fast._CODECS[charset]
        from_parse = needles_from_walked(fast._read_input(parsed.elements, codec)[0])
    except (NotRaw, KeyError, Unwalkable):
        pytest.skip(f"{name}: not a file for the fast path")
    from_pydicom = collect_needles(pydicom.dcmread(io.BytesIO(data)))
    assert {(n.source, n.pattern.pattern) for n in from_parse} == {
        (n.source, n.pattern.pattern) for n in from_pydicom}
    assert from_parse


def test_verifier_reads_values_as_pydicom_does() -> None:
    data = to_bytes(make_dataset())
    walked = {(tag, tuple(v.strip() for v in values))
              for tag, vr, values, depth in walk(data).values() if depth == 0 and vr != "SQ"}
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in ("PatientName", "ImageType", "InstitutionAddress", "StudyDescription",
                    "Rows", "ImagePositionPatient"):
        elem = ds[keyword]
        values = elem.value if elem.VM > 1 else [elem.value]
        assert (int(elem.tag), tuple(str(v).strip() for v in values)) in walked


def test_verifier_reader_refuses_what_it_does_not_know() -> None:
    with pytest.raises(Unwalkable):
        walk(to_bytes(make_dataset(), ImplicitVRLittleEndian))
    with pytest.raises(Unwalkable):
        walk(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00XX\x02\x00ab")


# --- the pixel scan's prefilter -------------------------------------------------------

def _scanner() -> PixelScanner:
    ds = make_dataset(PatientName="QUIMBYSON^ZEBULON")
    return PixelScanner(ds)


def test_pixel_scan_skips_ordinary_ct_words_without_translating_them() -> None:
    """Soft-tissue CT (stored values below 0x0900): no high byte falls in the needles'
    ranges (printable text; tab..CR from the phone and date separators)."""
    scanner = _scanner()
    pixels = np.random.default_rng(3).integers(0, 0x0900, 256 * 1024, dtype="<u2").tobytes()
    assert scanner._ranges is not None
    assert not scanner._may_hold_run(pixels)
    scanner.feed(pixels)  # nothing found, nothing raised


def test_pixel_scan_falls_back_to_the_byte_run_search_when_words_look_like_text() -> None:
    pixels = bytearray(np.random.default_rng(4).integers(
        0x0900, 0x0E00, 256 * 1024, dtype="<u2").tobytes())  # high bytes tab..CR
    scanner = _scanner()
    scanner.feed(bytes(pixels))  # the run search finds nothing to match
    pixels[5000:5009] = b"QUIMBYSON"
    with pytest.raises(DeidError, match="pixel data bytes"):
        _scanner().feed(bytes(pixels))


@pytest.mark.parametrize("offset", [0, 1, 4097, 300_001])
def test_pixel_scan_finds_a_name_at_any_offset_in_16_bit_data(offset: int) -> None:
    pixels = bytearray(np.zeros(256 * 1024, dtype="<u2").tobytes())
    pixels[offset:offset + 9] = b"QUIMBYSON"
    with pytest.raises(DeidError, match=r"\(0010,0010\) remains in pixel data bytes"):
        _scanner().feed(bytes(pixels))


def test_pixel_scan_finds_a_name_split_between_two_chunks() -> None:
    scanner = _scanner()
    first = bytes(8192) + b"QUIMB"
    second = b"YSON" + bytes(8192)
    scanner.feed(first)
    with pytest.raises(DeidError, match="pixel data bytes"):
        scanner.feed(second)


def _id_scanner() -> PixelScanner:
    return PixelScanner(make_dataset(PatientID="MRN123456", PatientTelephoneNumbers="555-867-5309"))


def test_ids_and_phone_numbers_leave_12_bit_images_to_the_quick_test() -> None:
    """Their separators in binary data are printable only: tab..CR (0x09-0x0D) are the
    high bytes of most 12-bit values and would send every chunk to the slow search."""
    pixels = np.random.default_rng(5).integers(0, 0x1000, 256 * 1024, dtype="<u2").tobytes()
    assert not _id_scanner()._may_hold_run(pixels)


@pytest.mark.parametrize("written", [b"MRN-123-456", b"mrn 123 456", b"(555) 867.5309", b"555 867 5309"])
def test_ids_and_phone_numbers_written_otherwise_are_found_in_pixel_data(written: bytes) -> None:
    pixels = bytearray(np.random.default_rng(6).integers(0, 0x1000, 256 * 1024, dtype="<u2").tobytes())
    pixels[70_001:70_003 + len(written)] = b"\x00" + written + b"\x00"  # not inside a longer word
    with pytest.raises(DeidError, match="remains in pixel data bytes"):
        _id_scanner().feed(bytes(pixels))


# --- values remembered across the files of a series -----------------------------------

def _fast_output(data: bytes, key: bytes = KEY, options: Options | None = None) -> pydicom.Dataset:
    out = io.BytesIO()
    assert fast.deidentify_raw(io.BytesIO(data), out, key=key, options=options or Options())
    return pydicom.dcmread(io.BytesIO(out.getvalue()))


def test_remembered_values_stay_within_their_key_patient_and_series() -> None:
    """The same study UID, date and description, seen again under another key, another
    patient (another date shift) or another series' names, are changed afresh."""
    first = _fast_output(to_bytes(make_dataset()))
    again = _fast_output(to_bytes(make_dataset()))
    other_key = _fast_output(to_bytes(make_dataset()), key=KEY[::-1])
    other_patient = _fast_output(to_bytes(make_dataset(PatientID="OTHER-77")))
    plain = _fast_output(to_bytes(make_dataset(SeriesDescription="QUIMBYSON review")))
    other_names = _fast_output(to_bytes(make_dataset(
        PatientName="QUIMBYSON^ZEB", SeriesDescription="QUIMBYSON review")))
    assert again.StudyInstanceUID == first.StudyInstanceUID
    assert again.StudyDate == first.StudyDate
    assert other_key.StudyInstanceUID != first.StudyInstanceUID
    assert other_patient.StudyDate != first.StudyDate
    assert plain.SeriesDescription == "QUIMBYSON review"
    assert "QUIMBYSON" not in other_names.get("SeriesDescription", "")
    without_dates = _fast_output(to_bytes(make_dataset()), options=Options(
        retain_longitudinal_modified_dates=False))
    assert "StudyDate" not in without_dates or not without_dates.StudyDate


def _with_value(data: bytes, tag: int, value: bytes) -> bytes:
    """The file with one short-VR element's value replaced (length fixed up)."""
    at = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF))
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    return data[:at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length:]


def test_odd_length_text_values_are_padded_as_pydicom_writes_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Odd lengths are invalid (PS3.5 7.1.1) but uploads have them; kept raw, the output
    # was invalid too.
    data = _with_value(to_bytes(make_dataset()), 0x00080070, b"ACME1")  # Manufacturer
    report, out = _fast(data, Options())
    assert report is not None and out == _pydicom_path(data, Options(), monkeypatch)[1]
    at = out.index(struct.pack("<HH", 0x0008, 0x0070))
    assert out[at + 6:at + 14] == struct.pack("<H", 6) + b"ACME1 "


@pytest.mark.parametrize("tag", [0x00280010, 0x00280101])  # Rows (read to decide), BitsStored
def test_odd_length_binary_numbers_are_a_clear_error(tag: int) -> None:
    data = _with_value(to_bytes(make_dataset()), tag, b"\x00\x02\x00")
    with pytest.raises(DeidError, match="BytesLengthException"):
        deidentify_file(io.BytesIO(data), io.BytesIO(), key=KEY, options=Options())


def test_a_sop_instance_uid_written_with_another_vr_is_left_to_pydicom() -> None:
    # Found by differential fuzzing: the UID action removes a non-UI value, and the fast
    # path then built its file meta from a missing element (KeyError).
    data = to_bytes(make_dataset())
    at = data.index(struct.pack("<HH", 0x0008, 0x0018) + b"UI", 200)  # past the file meta
    damaged = data[:at + 4] + b"LO" + data[at + 6:]
    assert fast.deidentify_raw(io.BytesIO(damaged), io.BytesIO(), key=KEY, options=Options()) is None
    with pytest.raises(DeidError) as err:
        deidentify_file(io.BytesIO(damaged), io.BytesIO(), key=KEY, options=Options())
    assert str(err.value) == "(0008,0018) SOPInstanceUID is not a UID: the instance cannot be identified"
