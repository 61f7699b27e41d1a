"""Burned-in pixel PHI: rules as data, header-only decisions, masking and safe decoding."""

from __future__ import annotations

import copy
import io
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
)

from deid import pixels
from deid.errors import UnsupportedError
from deid.pixels import (
    DECISION_KEYWORDS,
    MaskRule,
    PixelDecision,
    burned_in_risk,
    decide,
    find_masking_rule,
    mask,
)
from deid.profile import Options

PIXEL_DATA = Tag(0x7FE00010)
SC = "1.2.840.10008.5.1.4.1.1.7"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


def image(*, rows: int = 16, columns: int = 20, frames: int = 1, samples: int = 1,
          bits: int = 8, signed: bool = False, photometric: str | None = None,
          planar: int = 0, seed: int = 0, **attrs: Any) -> tuple[Dataset, np.ndarray]:
    """A native (explicit VR little endian) image with random non-zero pixels."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    shape: tuple[int, ...] = (frames, rows, columns) + ((samples,) if samples > 1 else ())
    arr = rng.integers(1, 100, size=shape).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundImageStorage
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    if samples == 3:
        ds.PlanarConfiguration = planar
    if frames > 1:
        ds.NumberOfFrames = frames
    raw = arr.transpose(0, 3, 1, 2) if samples == 3 and planar == 1 else arr
    ds.PixelData = raw.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds, arr


def frames_of(ds: Dataset) -> np.ndarray:
    """Decode the masked output independently of deid (pydicom, frames first)."""
    out = pydicom.pixels.pixel_array(ds)
    frames = int(ds.get("NumberOfFrames") or 1)
    return out if frames > 1 else out[None, ...]


def inside(regions: tuple[tuple[int, int, int, int], ...], shape: tuple[int, ...]) -> np.ndarray:
    sel = np.zeros(shape[:2], bool)
    for x, y, w, h in regions:
        sel[y:y + h, x:x + w] = True
    return sel


def assert_masked(before: np.ndarray, after: np.ndarray, regions) -> None:
    """0 inside every region of every frame and sample, untouched elsewhere."""
    assert before.shape == after.shape
    sel = inside(regions, before.shape[1:])
    for b, a in zip(before, after):
        assert (a[sel] == 0).all()
        assert np.array_equal(a[~sel], b[~sel])


# ---- the rules file ----------------------------------------------------------------------

def test_rules_file_names_its_format_edition_and_origin() -> None:
    doc = pixels.rules_document()
    assert doc["format"] == pixels.RULES_FORMAT
    assert doc["edition"]
    assert "DicomPixelAnonymizer.script" in doc["follows"]
    assert len(doc["rules"]) >= 20


def test_every_shipped_rule_has_a_match_and_regions_inside_its_image() -> None:
    doc = pixels.rules_document()
    names = set()
    for rule in doc["rules"]:
        name, match, regions = rule["name"], rule["match"], rule["regions"]
        assert name not in names
        names.add(name)
        rows, columns = match["Rows"], match["Columns"]
        assert isinstance(rows, int) and isinstance(columns, int) and rows > 0 and columns > 0
        assert set(match) - {"Rows", "Columns"}, f"{name}: matches on size alone"
        assert regions, f"{name}: no regions"
        for x, y, w, h in regions:
            assert 0 <= x and 0 <= y and w > 0 and h > 0, name
            assert x + w <= columns and y + h <= rows, f"{name}: region outside the image"
        if rule.get("whole_image"):
            assert regions == [[0, 0, columns, rows]], name
    compiled = pixels.load_rules()
    assert [r.rule.name for r in compiled] == [r["name"] for r in doc["rules"]]


def test_every_ultrasound_rule_names_a_device_not_just_a_size() -> None:
    for rule in pixels.rules_document()["rules"]:
        if rule["match"].get("Modality") == ["US"]:
            assert "Manufacturer" in rule["match"] and "ManufacturerModelName" in rule["match"]


def _doc(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"format": pixels.RULES_FORMAT, "edition": "test", "rules": list(rules)}


GOOD = {"name": "r", "match": {"Modality": ["US"], "Rows": 16, "Columns": 20},
        "regions": [[0, 0, 20, 4]]}


@pytest.mark.parametrize("change, message", [
    ({"regions": []}, "no regions"),
    ({"regions": None}, "no regions"),
    ({"regions": [[0, 0, 21, 4]]}, "outside"),
    ({"regions": [[0, 14, 5, 4]]}, "outside"),
    ({"regions": [[0, 0, 0, 4]]}, "outside"),
    ({"regions": [[0, 0, 4]]}, "not \\[x, y, width, height\\]"),
    ({"match": {"Modality": ["US"], "Rows": 16}}, "Rows and Columns"),
    ({"match": {"Modality": ["US"], "Rows": 16, "Columns": 20, "PatientName": "X"}}, "unknown match keys"),
    ({"match": {}}, "no match"),
    ({"whole_image": True}, "whole_image"),
])
def test_invalid_rules_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pixels.load_rules(_doc({**GOOD, **change}))


def test_a_whole_image_rule_covers_the_image() -> None:
    rule = {**GOOD, "whole_image": True, "regions": [[0, 0, 20, 16]]}
    (compiled,) = pixels.load_rules(_doc(rule))
    assert compiled.rule.whole_image and compiled.rule.regions == ((0, 0, 20, 16),)


# ---- matching ------------------------------------------------------------------------------

def header(**attrs: Any) -> Dataset:
    ds = Dataset()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def test_rules_match_on_manufacturer_model_and_size_case_insensitively() -> None:
    ds = header(Modality="US", Manufacturer="Philips Medical Systems",
                ManufacturerModelName="iu22", Rows=600, Columns=800)
    assert find_masking_rule(ds).name == "philips-iu22-800x600"
    ds.Rows, ds.Columns = 768, 1024
    assert find_masking_rule(ds).name == "philips-iu22-1024x768"
    ds.Rows = 767
    assert find_masking_rule(ds) is None
    ds.Rows, ds.Manufacturer = 768, "ACME"
    assert find_masking_rule(ds) is None


def test_manufacturer_regex_matches_ge_families_but_not_lookalikes() -> None:
    ds = header(Modality="US", Manufacturer="GE Healthcare", ManufacturerModelName="LOGIQE9",
                Rows=720, Columns=960)
    assert find_masking_rule(ds).name == "ge-logiq-e9-960x720"
    for maker in ("GE MEDICAL SYSTEMS", "GEMS Ultrasound", "Kretztechnik"):
        ds.Manufacturer = maker
        assert find_masking_rule(ds) is not None, maker
    ds.Manufacturer = "GENERIC IMAGING"
    assert find_masking_rule(ds) is None


def test_image_type_and_burned_in_annotation_conditions() -> None:
    ds = header(Modality="CT", Manufacturer="SIEMENS", ImageType=["DERIVED", "PRIMARY"],
                Rows=860, Columns=1132)
    assert find_masking_rule(ds) is None
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    assert find_masking_rule(ds).name == "siemens-ct-dose-screen-1132x860"
    ws = header(Manufacturer="GE MEDICAL SYSTEMS", Rows=512, Columns=512, BurnedInAnnotation="NO")
    assert find_masking_rule(ws) is None
    ws.BurnedInAnnotation = "YES"
    assert find_masking_rule(ws).name == "ge-screen-capture-512x512"


def test_first_matching_rule_wins() -> None:
    broad = {"name": "broad", "match": {"Modality": ["US"], "Rows": 16, "Columns": 20},
             "regions": [[0, 0, 20, 8]]}
    narrow = {"name": "narrow", "match": {"Modality": ["US"], "Manufacturer": "ACME",
                                          "Rows": 16, "Columns": 20},
              "regions": [[0, 0, 20, 2]]}
    ds = header(Modality="US", Manufacturer="ACME", Rows=16, Columns=20)
    assert find_masking_rule(ds, pixels.load_rules(_doc(broad, narrow))).name == "broad"
    assert find_masking_rule(ds, pixels.load_rules(_doc(narrow, broad))).name == "narrow"
    ds.Manufacturer = "OTHER"
    assert find_masking_rule(ds, pixels.load_rules(_doc(narrow, broad))).name == "broad"


def test_sop_class_condition() -> None:
    demo = header(Modality="US", SOPClassUID=US_MULTIFRAME, Manufacturer="GE Healthcare",
                  ManufacturerModelName="LOGIQ E10", Rows=96, Columns=128)
    assert find_masking_rule(demo) is None  # the demo rule is for single-frame US only
    demo.SOPClassUID = UltrasoundImageStorage
    assert find_masking_rule(demo).name == "synthetic-ge-logiq-demo-128x96"


def test_the_synthetic_demo_ultrasound_image_matches_a_shipped_rule() -> None:
    from demo.synthetic import DEMO_SPECS, fake_patients, make_instance, make_uid

    spec = next(s for s in DEMO_SPECS if s["modality"] == "US")
    patient = fake_patients(1, seed=3)[0]
    for manufacturer, model in spec["scanners"]:
        ds = make_instance(patient=patient, modality="US", study_uid=make_uid("s"),
                           series_uid=make_uid("se"), sop_uid=make_uid("i", model),
                           rows=spec["rows"], columns=spec["columns"],
                           manufacturer=manufacturer, model=model)
        decision = decide(ds, Options())
        assert decision.action == "mask", decision
        assert decision.rule is not None and decision.rule.name == "synthetic-ge-logiq-demo-128x96"
        before = frames_of(ds).copy()
        assert mask(ds, decision.rule) == ExplicitVRLittleEndian
        assert_masked(before, frames_of(ds), decision.rule.regions)
    # The default 64x64 synthetic US image has no rule: it still needs the attestation.
    small = make_instance(patient=patient, modality="US", study_uid=make_uid("s"),
                          series_uid=make_uid("se"), sop_uid=make_uid("small"))
    assert decide(small, Options()).action == "reject"


# ---- risk and decisions ---------------------------------------------------------------------

class NoPixelAccess(Dataset):
    """A data set whose pixel data must not be read: any access fails the test."""

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, slice) and Tag(key) in pixels._PIXEL_TAGS:
            raise AssertionError("PixelData was touched")
        return super().__getitem__(key)


def guarded(**attrs: Any) -> Dataset:
    ds = NoPixelAccess()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = b"\x00" * 16
    return ds


@pytest.mark.parametrize("attrs, reason", [
    ({"Modality": "CT", "BurnedInAnnotation": "YES"}, "image declares BurnedInAnnotation YES"),
    ({"Modality": "US"}, "ultrasound image"),
    ({"SOPClassUID": US_MULTIFRAME}, "ultrasound image"),
    ({"Modality": "OT", "SOPClassUID": SC}, "secondary capture image"),
    ({"Modality": "OT", "ConversionType": "WSD"}, "screen capture or digitized image"),
    ({"Modality": "CT", "ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]},
     "screen save or report image"),
    ({"Modality": "CR", "SOPClassUID": CR, "ImageType": ["DERIVED", "SECONDARY"]},
     "secondary projection radiograph"),
    ({"Modality": "DX", "SOPClassUID": DX_PRESENTATION}, "projection radiograph without BurnedInAnnotation"),
    ({"Modality": "DX", "SOPClassUID": DX_PRESENTATION, "BurnedInAnnotation": "NO",
      "Manufacturer": "Canon Inc.", "ManufacturerModelName": "CXDI-70C", "Rows": 2592,
      "Columns": 2208}, "device known to burn in annotations"),
    ({"Modality": "CT", "RecognizableVisualFeatures": "YES"},
     "image declares recognizable visual features"),
    ({"Modality": "XC", "BurnedInAnnotation": "NO"}, "visible-light photograph or video"),
    ({"Modality": "ES"}, "visible-light photograph or video"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.1.1"}, "visible-light photograph or video"),
    ({"Modality": "SM", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.6",
      "ImageType": ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]}, "slide label or overview image"),
])
def test_burned_in_risk_kinds(attrs: dict[str, Any], reason: str) -> None:
    assert burned_in_risk(guarded(**attrs)) == reason


@pytest.mark.parametrize("attrs", [
    {"Modality": "CT", "BurnedInAnnotation": "NO"},
    {"Modality": "CT"},
    {"Modality": "CR", "SOPClassUID": CR, "ImageType": ["ORIGINAL", "PRIMARY"]},
    {"Modality": "DX", "SOPClassUID": DX_PRESENTATION, "BurnedInAnnotation": "NO"},
    {"Modality": "MR", "ImageType": ["DERIVED", "SECONDARY", "MPR"]},
    {"Modality": "SM", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.6",
     "ImageType": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]},  # the tissue, not its label
    {"Modality": "OPT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.5.4"},
])
def test_no_risk(attrs: dict[str, Any]) -> None:
    assert burned_in_risk(guarded(**attrs)) is None


class _Recording(dict):
    """A header that notes every keyword decide() reads (the fast path caches decisions
    keyed by DECISION_KEYWORDS: one read but not listed would share a stale decision)."""

    read: set[str]

    def get(self, keyword: str, default: Any = None) -> Any:
        self.read.add(keyword)
        return super().get(keyword, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key) or key in (0x7FE00010, "PixelData")


@pytest.mark.parametrize("attrs", [
    {"Modality": "SM", "ImageType": ["ORIGINAL", "PRIMARY", "LABEL"]}, {"Modality": "CT"},
    {"Modality": "DX", "SOPClassUID": DX_PRESENTATION}, {"Modality": "XC"},
    {"Modality": "US", "Manufacturer": "GE", "Rows": 600, "Columns": 800},
])
def test_decide_reads_only_the_decision_keywords(attrs: dict[str, Any]) -> None:
    header = _Recording(attrs)
    header.read = set()
    decide(header, Options())
    decide(header, Options(accept_burned_in_risk=True))
    assert header.read - {"PixelData"} <= set(DECISION_KEYWORDS)


def test_objects_without_pixels_carry_no_risk() -> None:
    assert burned_in_risk(header(Modality="US", BurnedInAnnotation="YES")) is None


DEVICE = {"Manufacturer": "Philips Medical Systems", "ManufacturerModelName": "iU22 xMATRIX",
          "Rows": 600, "Columns": 800, "InstitutionName": "SAINT ELSEWHERE"}


@pytest.mark.parametrize("attrs, options, expected", [
    ({"Modality": "CT"}, Options(), PixelDecision("pass")),
    ({"Modality": "US", **DEVICE}, Options(), "mask"),
    ({"Modality": "US", **DEVICE}, Options(accept_burned_in_risk=True), "mask"),
    ({"Modality": "US", **DEVICE}, Options(clean_pixel_data=False), "reject"),
    ({"Modality": "US", **DEVICE}, Options(clean_pixel_data=False, accept_burned_in_risk=True), "pass"),
    ({"Modality": "US", **{**DEVICE, "Rows": 601}}, Options(), "reject"),
    ({"Modality": "US", **{**DEVICE, "Rows": 601}}, Options(accept_burned_in_risk=True), "pass"),
])
def test_decide_reads_the_header_only(attrs: dict[str, Any], options: Options,
                                      expected: PixelDecision | str) -> None:
    decision = decide(guarded(**attrs), options)
    if isinstance(expected, PixelDecision):
        assert decision == expected
        return
    assert decision.action == expected
    said = decision.reason.replace(decision.rule.name, "") if decision.rule else decision.reason
    for value in ("PHILIPS", "IU22", "SAINT", "601", "600"):  # reasons are PHI-free
        assert value not in said.upper()
    if expected == "mask":
        assert decision.rule is not None and decision.rule.name == "philips-iu22-800x600"
        assert decision.reason == "ultrasound image: masked by rule philips-iu22-800x600"
    elif expected == "reject":
        assert decision.reason == "burned-in annotation: ultrasound image with no masking rule"
    else:
        assert decision.reason == "ultrasound image: provider accepted the burned-in risk"


# ---- masking native data ----------------------------------------------------------------------

REGIONS = ((0, 0, 20, 3), (5, 10, 4, 4), (18, 14, 10, 10))  # the last one is clipped


@pytest.mark.parametrize("kwargs", [
    {"bits": 8},
    {"bits": 16},
    {"bits": 16, "signed": True},
    {"bits": 8, "frames": 4},
    {"bits": 16, "frames": 3},
    {"bits": 8, "samples": 3},
    {"bits": 8, "samples": 3, "planar": 1},
    {"bits": 8, "samples": 3, "frames": 2, "planar": 1},
])
def test_mask_blanks_exactly_the_regions(kwargs: dict[str, Any]) -> None:
    ds, original = image(**kwargs)
    assert mask(ds, MaskRule("t", REGIONS)) == ExplicitVRLittleEndian
    after = frames_of(ds)
    assert_masked(original, after, REGIONS)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds["PixelData"].VR == ("OB" if kwargs["bits"] == 8 else "OW")
    if kwargs.get("samples") == 3:
        assert ds.PlanarConfiguration == 0 and ds.PhotometricInterpretation == "RGB"


def test_mask_converts_native_ybr_to_rgb() -> None:
    path = get_testdata_file("SC_ybr_full_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    before = ds.pixel_array.copy()  # pydicom converts YBR_FULL to RGB
    rule = MaskRule("t", ((0, 0, 100, 10),))
    assert mask(ds, rule) == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "RGB"
    assert_masked(before[None], frames_of(ds), rule.regions)


def test_mask_writes_a_readable_file_with_big_endian_input() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    before = ds.pixel_array.copy()
    rule = MaskRule("t", ((0, 0, 64, 5),))
    mask(ds, rule)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    again = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert_masked(before[None], again.pixel_array[None], rule.regions)


def test_mask_refuses_an_image_of_another_size() -> None:
    ds, _ = image()
    with pytest.raises(UnsupportedError, match="image size does not match the masking rule"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),), rows=17, columns=20))


def test_mask_refuses_short_native_pixel_data() -> None:
    ds, _ = image(frames=3)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(UnsupportedError, match="cannot clean pixel data"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))


# ---- masking compressed data --------------------------------------------------------------------

def bundled(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available")
    return pydicom.dcmread(path)


@pytest.mark.parametrize("name, photometric, lossy", [
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "YBR_FULL_422", True),  # JPEG baseline
    ("SC_rgb_jpeg_dcmtk.dcm", "YBR_FULL", True),
    ("US1_J2KR.dcm", "YBR_RCT", False),  # JPEG 2000 lossless, 640x480 US
    ("JPEG2000.dcm", "MONOCHROME2", True),
    ("SC_rgb_rle.dcm", "RGB", False),
    ("SC_rgb_jpeg_gdcm.dcm", "RGB", False),  # JPEG lossless SV1: pylibjpeg-libjpeg
    ("emri_small_jpeg_2k_lossless.dcm", "MONOCHROME2", False),  # multi-frame
])
def test_compressed_input_is_decoded_masked_and_stored_uncompressed(
        name: str, photometric: str, lossy: bool) -> None:
    ds = bundled(name)
    assert ds.PhotometricInterpretation == photometric
    before = frames_of(ds).copy()  # decoded by pydicom, YBR -> RGB
    lossy_before = ds.get("LossyImageCompression")
    rule = MaskRule("t", ((0, 0, int(ds.Columns), 6), (3, 8, 5, 5)))
    assert mask(ds, rule) == ExplicitVRLittleEndian
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not ds["PixelData"].is_undefined_length
    if ds.SamplesPerPixel == 3:
        assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0
    assert_masked(before, frames_of(ds), rule.regions)
    if lossy:
        assert ds.LossyImageCompression == "01"
    else:
        assert ds.get("LossyImageCompression") == lossy_before


def test_every_frame_of_a_compressed_multiframe_image_is_masked() -> None:
    ds = bundled("color3d_jpeg_baseline.dcm")  # 120 frames, YBR_FULL_422
    before = frames_of(ds).copy()
    rule = MaskRule("t", ((0, 0, int(ds.Columns), 20),))
    mask(ds, rule)
    after = frames_of(ds)
    assert after.shape[0] == int(ds.NumberOfFrames) == 120
    assert_masked(before, after, rule.regions)


def compressed(ts: str, frames: list[bytes], **attrs: Any) -> Dataset:
    ds, _ = image(rows=8, columns=8, **attrs)
    ds.file_meta.TransferSyntaxUID = ts
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].is_undefined_length = True
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    return ds


def test_a_corrupt_compressed_stream_is_refused_with_a_clear_reason() -> None:
    ds = compressed(JPEGBaseline8Bit, [b"\xff\xd8\xff\xdb" + b"\x13" * 60 + b"\xff\xd9"])
    with pytest.raises(UnsupportedError) as err:
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))
    assert str(err.value).startswith("cannot clean pixel data: pixel data could not be decoded (")


def test_a_missing_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    ds = compressed(JPEG2000, [b"\x00" * 10])
    with pytest.raises(UnsupportedError,
                       match="^cannot clean pixel data: JPEG 2000 decoder not installed$"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))


def test_a_transfer_syntax_without_any_decoder_is_refused() -> None:
    ds = compressed(MPEG2MPML, [b"\x00" * 10])
    with pytest.raises(UnsupportedError,
                       match="^cannot clean pixel data: no decoder for this transfer syntax$"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))


def _children() -> set[int]:
    import psutil
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_the_52_byte_jpeg2000_hang_is_cut_off_by_the_time_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # pydicom 3.0.2: a JP2 header whose next box has length 0 loops pydicom forever.
    codestream = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00ftyp" + b"\x00" * 32
    assert len(codestream) == 52
    ds = compressed(JPEG2000, [codestream])
    monkeypatch.setattr(pixels, "DECODE_TIMEOUT_SECONDS", 3.0)
    before = _children()
    started = time.monotonic()
    with pytest.raises(UnsupportedError, match="^cannot clean pixel data: decoding timed out$"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))
    assert time.monotonic() - started < 15
    assert _children() <= before  # the looping child was killed


FAKE_DECODERS = textwrap.dedent("""
    import time
    import numpy as np

    def sleepy(payload):
        yield np.zeros((8, 8), np.uint8)
        time.sleep(60)
        yield np.zeros((8, 8), np.uint8)

    def wrong_shape(payload):
        yield np.zeros((4, 4), np.uint8)

    def too_few(payload):
        yield np.ones((8, 8), np.uint8)
""")


@pytest.fixture
def fake_decoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "fake_px_decoders.py").write_text(FAKE_DECODERS)
    monkeypatch.syspath_prepend(str(tmp_path))  # passed on to the child's PYTHONPATH
    return "fake_px_decoders"


def test_the_time_limit_applies_to_every_frame(fake_decoders: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pixels, "DECODER", f"{fake_decoders}:sleepy")
    monkeypatch.setattr(pixels, "DECODE_TIMEOUT_SECONDS", 3.0)
    ds = compressed(JPEG2000, [b"a", b"b"])
    original = ds.PixelData
    started = time.monotonic()
    with pytest.raises(UnsupportedError, match="^cannot clean pixel data: decoding timed out$"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))
    assert time.monotonic() - started < 20
    assert ds.PixelData == original  # nothing half-masked was stored


@pytest.mark.parametrize("decoder, reason", [
    ("wrong_shape", "decoded frames do not match the image header"),
    ("too_few", "decoder stopped unexpectedly"),
])
def test_a_misbehaving_decoder_is_refused(fake_decoders: str, monkeypatch: pytest.MonkeyPatch,
                                          decoder: str, reason: str) -> None:
    monkeypatch.setattr(pixels, "DECODER", f"{fake_decoders}:{decoder}")
    ds = compressed(JPEG2000, [b"a", b"b"])
    with pytest.raises(UnsupportedError, match=f"^cannot clean pixel data: {reason}$"):
        mask(ds, MaskRule("t", ((0, 0, 1, 1),)))


def test_mask_does_not_alter_the_rule() -> None:
    rule = MaskRule("t", ((0, 0, 2, 2),))
    kept = copy.deepcopy(rule)
    ds, _ = image()
    mask(ds, rule)
    assert rule == kept


# ---- end to end through the engine ---------------------------------------------------------------

def demo_ultrasound(tmp_path: Path, *, compress: str | None = None) -> tuple[Path, np.ndarray]:
    from demo.synthetic import fake_patients, make_instance, make_uid, to_bytes

    ds = make_instance(patient=fake_patients(1, seed=5)[0], modality="US",
                       study_uid=make_uid("e2e"), series_uid=make_uid("e2e-s"),
                       sop_uid=make_uid("e2e-i"), rows=96, columns=128,
                       manufacturer="GE Healthcare", model="LOGIQ E10")
    original = ds.pixel_array.copy()
    if compress:
        ds.compress(compress)
    path = tmp_path / "us.dcm"
    path.write_bytes(to_bytes(ds))
    return path, original


@pytest.mark.parametrize("compress", [None, "1.2.840.10008.1.2.5"])  # native, RLE Lossless
def test_deidentify_file_masks_a_rule_matching_ultrasound_image(
        tmp_path: Path, compress: str | None) -> None:
    from deid_factory import KEY

    from deid import deidentify_file

    path, original = demo_ultrasound(tmp_path, compress=compress)
    out = io.BytesIO()
    report = deidentify_file(path, out, key=KEY)
    assert report.verified
    assert "113101" in report.method_codes
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in result.DeidentificationMethodCodeSequence]
    rule = find_masking_rule(pydicom.dcmread(path, stop_before_pixels=True))
    assert rule is not None
    assert_masked(original[None], frames_of(result), rule.regions)


def test_deidentify_file_without_the_clean_pixel_data_option_still_refuses(tmp_path: Path) -> None:
    from deid_factory import KEY

    from deid import deidentify_file
    from deid.errors import BurnedInAnnotationError

    path, _ = demo_ultrasound(tmp_path)
    with pytest.raises(BurnedInAnnotationError, match="ultrasound image with no masking rule"):
        deidentify_file(path, io.BytesIO(), key=KEY, options=Options(clean_pixel_data=False))
