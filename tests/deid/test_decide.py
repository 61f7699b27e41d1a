"""One decision, two paths: decide() (deid/decide.py) is what both engine.py and fast.py
carry out. Behavioural check: a synthetic file holding every attribute of Table E.1-1
and of the allow-list, curves, overlays, unknown public tags and private attributes
(listed safe ones, listed with another VR, unlisted), de-identified under every
combination of the options that change decisions, comes out byte for byte the same,
with the same report, from both paths."""

from __future__ import annotations

import io
import itertools
import json
from importlib import resources

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from deid import Options, deidentify_file, engine, fast
from deid.decide import A_KEEP, A_REMOVE, CLEAN_PATIENT_TEXT, decide
from deid.profile import load_profile

KEY = b"decide-test-key-0123456789abcdef"
_SKIP_GROUPS = {0x0000, 0x0002, 0x0028, 0x7FE0, 0xFFFA, 0xFFFC, 0xFFFE}
_SKIP_TAGS = {0x00080005, 0x00080016, 0x00080018}


def _letters(tag: int) -> str:
    """A word unique to the tag (no digits: the scrubber's number rules stay out)."""
    return "".join(chr(ord("a") + int(c, 16)) for c in f"{tag:08x}")


def _value(tag: int, vr: str) -> object:
    word = _letters(tag)
    return {
        "AE": "AE" + word.upper()[:14], "AS": "045Y", "AT": 0x00100010, "CS": word.upper(),
        "DA": "20200102", "DS": "1.5", "DT": "20200102030405", "FL": 1.5, "FD": 2.5,
        "IS": "7", "LO": f"lo {word}", "LT": f"lt {word}", "PN": f"Fam{word}^Giv{word}",
        "SH": word, "ST": f"st {word}", "TM": "030405", "UC": f"uc {word}",
        "UI": f"1.2.826.0.1.3680043.8.498.{int(tag)}", "UR": f"http://example.org/{word}",
        "UT": f"ut {word}", "SL": -3, "SS": -2, "SV": -4, "UL": 3, "US": 2, "UV": 4,
        "OB": b"\x01\x02\x03\x04", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4,
        "OV": b"\x00" * 8, "OW": b"\x01\x02\x03\x04",
    }[vr]


def _item(tag: int) -> Dataset:
    """A sequence item: what decide() says for nested elements (top=False) too."""
    item = Dataset()
    item.CodeValue = _letters(tag)[:8].upper()
    item.CodeMeaning = f"meaning {_letters(tag)}"
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.9{int(tag)}"
    item.PatientID = f"id{_letters(tag)}"
    item.StudyDate = "20200103"
    return item


def _public_tags() -> list[int]:
    table = [int(r["tag"], 16) for r in json.loads(
        resources.files("deid").joinpath("data", "ps3.15-e1-1-2024.json").read_text("utf-8"))["rows"]
        if r["keyword"]]
    allowed = sorted(load_profile().allowed)
    return [t for t in sorted(set(table) | set(allowed))
            if t >> 16 not in _SKIP_GROUPS and t not in _SKIP_TAGS]


def _safe_private_sample() -> list[tuple[int, str, int, str]]:
    """(group, creator, offset, VR) of listed safe private attributes, not sequences."""
    rows = json.loads(resources.files("deid").joinpath("data", "safe_private.json")
                      .read_text("utf-8"))["rows"]
    chosen = [r for r in rows if r["vr"] not in ("", "SQ") and "/" not in r["vr"]][:: 40]
    return [(int(r["group"], 16), r["creator"], int(r["element"], 16), r["vr"]) for r in chosen]


def synthetic_file(person: str = "SAMPLE^PAT") -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.424242"
    for tag in _public_tags():
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([_item(tag)]))
        elif vr != "UN":
            ds.add_new(tag, vr, _value(tag, vr))
    ds.PatientName = person
    ds.PatientAge = "095Y"  # capped at 090Y when kept
    ds.SeriesDate = "20210231"  # no such day: removed, never kept unshifted
    ds.PatientComments = "Lighthouse visit"
    ds.add_new(0x00189999, "LO", "not in any dictionary")
    ds.add_new(0x00771234, "UT", "unknown even group")
    ds.add_new(0x50000010, "US", 1)  # curve
    ds.add_new(0x60000022, "LO", "overlay description")
    unlisted = ds.private_block(0x0029, "ACME PRIVATE", create=True)
    unlisted.add_new(0x01, "LO", "private value")
    for index, (group, creator, offset, vr) in enumerate(_safe_private_sample()):
        block = ds.private_block(group, creator, create=True)
        if block.get_tag(offset) in ds:
            continue
        block.add_new(offset, vr, _value(block.get_tag(offset), vr))
        other_vr = "UT" if vr != "UT" else "LO"  # listed, but another attribute
        other = ds.private_block(group + 2 * (index + 1) % 0x100 or 0x0031, creator, create=True)
        if other.get_tag(offset) not in ds:
            other.add_new(offset, other_vr, _value(other.get_tag(offset), other_vr))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


_FLAGS = ("retain_patient_characteristics", "retain_longitudinal_modified_dates",
          "retain_device_identity", "clean_descriptors", "retain_safe_private")
OPTION_SETS = [
    Options(accept_burned_in_risk=True, accept_patient_free_text_risk=free_text,
            **dict(zip(_FLAGS, values)))
    for values in itertools.product((True, False), repeat=len(_FLAGS))
    for free_text in (False, True)
]


def _no_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    # Options such as Retain Device Identity keep values the verifier rightly rejects
    # (on both paths alike); here the subject is what the profile does, so it is off.
    monkeypatch.setattr(fast, "verify_output", lambda *args, **kwargs: None)
    monkeypatch.setattr(engine, "verify_output", lambda *args, **kwargs: None)


def _both(data: bytes, options: Options, monkeypatch: pytest.MonkeyPatch):
    out = io.BytesIO()
    fast_report = fast.deidentify_raw(io.BytesIO(data), out, key=KEY, options=options)
    assert fast_report is not None, "the fast path declined the synthetic file"
    fast_out = out.getvalue()
    with monkeypatch.context() as patch:
        patch.setattr(fast, "deidentify_raw", lambda *args, **kwargs: None)
        out = io.BytesIO()
        report = deidentify_file(io.BytesIO(data), out, key=KEY, options=options)
    return (fast_report, fast_out), (report, out.getvalue())


_LATIN = synthetic_file()
_KANJI = synthetic_file("山田^太郎")


@pytest.mark.parametrize("options", OPTION_SETS,
                         ids=lambda o: "".join("1" if getattr(o, f) else "0" for f in _FLAGS)
                         + ("-freetext" if o.accept_patient_free_text_risk else ""))
def test_both_paths_carry_out_the_same_decisions(options: Options,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _no_verifier(monkeypatch)
    (fast_report, fast_out), (report, out) = _both(_LATIN, options, monkeypatch)
    assert fast_report == report
    assert fast_out == out
    ds = pydicom.dcmread(io.BytesIO(out))
    if options.accept_patient_free_text_risk and options.clean_descriptors:
        assert ds.PatientComments == "Lighthouse visit"  # cleaned, nothing of the patient in it
    else:
        assert "PatientComments" not in ds
    assert "Occupation" not in ds and "PatientReligiousPreference" not in ds
    if options.retain_patient_characteristics:
        assert ds.PatientAge == "090Y"
    assert "SeriesDate" not in ds


@pytest.mark.parametrize("options", [o for o in OPTION_SETS if o.accept_patient_free_text_risk],
                         ids=lambda o: "".join("1" if getattr(o, f) else "0" for f in _FLAGS))
def test_both_paths_remove_opted_in_free_text_when_names_cannot_be_verified(
        options: Options, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_verifier(monkeypatch)
    (fast_report, fast_out), (report, out) = _both(_KANJI, options, monkeypatch)
    assert (fast_report, fast_out) == (report, out)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert "PatientComments" not in ds and "AdditionalPatientHistory" not in ds


def test_the_synthetic_file_covers_the_table_the_allow_list_and_private_kinds() -> None:
    ds = pydicom.dcmread(io.BytesIO(_LATIN))
    tags = {int(t) for t in ds.keys()}
    wanted = {t for t in _public_tags() if dictionary_VR(t) != "UN"}
    assert wanted <= tags and len(wanted) > 700
    kept_private = [t for t in tags if (t >> 16) % 2 and t & 0xFFFF >= 0x1000]
    assert len(kept_private) >= 10


def test_decide_is_pure_and_covers_the_structural_rules() -> None:
    opts = Options()
    assert decide(0x00081030, "LO", opts) == decide(0x00081030, "LO", opts)
    assert decide(0x00100010, "PN", opts, top=True).op == "pseudonym"
    assert decide(0x00100010, "PN", opts).op != "pseudonym"  # nested: the table's action
    assert decide(0x00102180, "LO", opts) is A_REMOVE  # Occupation
    assert decide(0x00280010, "US", opts) is A_KEEP  # Rows, allow-list
    assert decide(0x00189999, "LO", opts) is A_REMOVE  # unknown public
    assert decide(0x60000022, "LO", opts).count == "overlay_removed"
    assert decide(0x00291001, "LO", opts).count == "private_removed"
    assert decide(0x00104000, "LT", Options(accept_patient_free_text_risk={"PatientComments"})
                  ).op == CLEAN_PATIENT_TEXT
    assert decide(0x00104000, "LT", Options(accept_patient_free_text_risk={"PatientComments"},
                                            clean_descriptors=False)) is A_REMOVE
