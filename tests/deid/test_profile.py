from __future__ import annotations

import json
from importlib import resources

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from deid.profile import (
    CLEAN, COMBINED, KEEP, OPTION_COLUMNS, REMOVE, UID, ZERO, Options, load_profile,
)


def _data(name: str) -> dict:
    return json.loads(resources.files("deid").joinpath("data", name).read_text("utf-8"))


def test_table_copy_is_complete_and_names_its_source() -> None:
    table = _data("ps3.15-e1-1-2024.json")
    assert len(table["rows"]) == 621
    assert "PS3.15" in table["_source"] and "2024" in table["_source"]
    assert table["_edition"] == "2024"


def test_every_basic_code_has_a_documented_reading() -> None:
    codes = {row["basic"] for row in _data("ps3.15-e1-1-2024.json")["rows"]}
    assert codes <= set(COMBINED)
    assert codes >= {"X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}


@pytest.mark.parametrize("keyword, basic", [
    ("PatientName", "Z"), ("PatientID", "Z/D"), ("StudyDate", "Z"), ("AccessionNumber", "Z"),
    ("SOPInstanceUID", "U"), ("InstitutionName", "X/Z/D"), ("PatientAge", "X"),
    ("StudyDescription", "X"), ("ReferencedImageSequence", "X/Z/U*"),
])
def test_sample_rows_match_the_standard(keyword: str, basic: str) -> None:
    assert load_profile().rules[tag_for_keyword(keyword)].basic == basic


def test_options_switch_the_actions_of_their_columns() -> None:
    profile = load_profile()
    age, date, desc, serial = (tag_for_keyword(k) for k in
                               ("PatientAge", "StudyDate", "StudyDescription", "DeviceSerialNumber"))
    none = Options(retain_patient_characteristics=False, retain_longitudinal_modified_dates=False,
                   retain_device_identity=False, clean_descriptors=False)
    assert [profile.action_for(t, none) for t in (age, date, desc, serial)] == [REMOVE, ZERO, REMOVE, REMOVE]
    assert [profile.action_for(t, Options()) for t in (age, date, desc, serial)] == [KEEP, CLEAN, CLEAN, REMOVE]
    assert profile.action_for(tag_for_keyword("SeriesInstanceUID"), Options()) == UID
    assert profile.action_for(tag_for_keyword("Rows"), Options()) is None


def test_the_stricter_option_action_wins_when_two_apply() -> None:
    # Date of Last Calibration: device identity says K, modified dates says C.
    assert load_profile().action_for(tag_for_keyword("DateOfLastCalibration"), Options()) == CLEAN


def test_option_columns_name_real_option_fields() -> None:
    assert set(OPTION_COLUMNS.values()) <= set(Options.names())


def test_options_parse_from_cli_flags() -> None:
    opts = Options.from_flags(["retain_safe_private", "clean-descriptors=false"])
    assert opts.retain_safe_private and not opts.clean_descriptors and not opts.retain_device_identity
    with pytest.raises(ValueError, match="unknown option"):
        Options.from_flags(["retain_everything"])


# --- the allow-list is itself under test -----------------------------------------------

ALLOW = _data("allowlist.json")["rows"]
NEEDED_BY_BUYERS = {
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "PixelSpacing", "PixelData", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "WindowCenter", "WindowWidth", "SliceThickness", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceLocation", "KVP", "Modality", "SOPClassUID",
    "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "BodyPartExamined",
    "EchoTime", "RepetitionTime", "SpacingBetweenSlices", "ConvolutionKernel",
    "PatientPosition", "SeriesNumber", "InstanceNumber", "AcquisitionNumber", "ImageType",
    "SpecificCharacterSet", "LossyImageCompression",
}


def test_allow_list_rows_are_real_attributes_with_matching_tags() -> None:
    for row in ALLOW:
        tag = int(row["tag"], 16)
        assert keyword_for_tag(tag) == row["keyword"]
        assert dictionary_VR(tag) == row["vr"]


def test_allow_list_does_not_override_table_e1_1() -> None:
    table = load_profile().rules
    assert not [row["keyword"] for row in ALLOW if int(row["tag"], 16) in table]


def test_allow_list_holds_no_identity_bearing_vr() -> None:
    for row in ALLOW:
        assert row["vr"] not in {"PN", "DA", "DT", "TM", "AS", "AE", "UR"}, row["keyword"]
        if row["vr"] == "UI":
            assert row["keyword"] in {"SOPClassUID", "ReferencedSOPClassUID"}


def test_allow_list_holds_what_buyers_need() -> None:
    assert NEEDED_BY_BUYERS <= {row["keyword"] for row in ALLOW}


def test_allow_list_has_no_private_or_repeating_group_tags() -> None:
    for row in ALLOW:
        group = int(row["tag"], 16) >> 16
        assert group % 2 == 0 and group & 0xFF00 not in (0x5000, 0x6000)


def test_safe_private_rows_are_well_formed() -> None:
    vrs = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
           "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
           "UL", "UR", "US", "UT", "UV"}
    rows = json.loads(resources.files("deid").joinpath("data", "safe_private.json").read_text("utf-8"))["rows"]
    assert len(rows) == len(load_profile().safe_private)  # no row shadows another
    for (group, creator, element), vr in load_profile().safe_private.items():
        assert group % 2 == 1 and creator and 0 <= element <= 0xFF
        assert vr == "" or set(vr.split("/")) <= vrs
