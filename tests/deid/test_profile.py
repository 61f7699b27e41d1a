from __future__ import annotations

import itertools
import json
from importlib import resources

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from deid.decide import A_KEEP, A_REMOVE, CLEAN_PATIENT_TEXT, decide
from deid.profile import (
    CLEAN,
    COMBINED,
    KEEP,
    OPTION_COLUMNS,
    REMOVE,
    UID,
    ZERO,
    Options,
    describe,
    load_profile,
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


# --- decisions.json: every C and K row decided, with a reason -----------------------------

DECISIONS = _data("decisions.json")
OFFERED_COLUMNS = {"rtnPatCharsOpt", "rtnLongModifDatesOpt", "rtnDevIdOpt", "cleanDescOpt"}
KEPT_CHARACTERISTICS = {"PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
                        "SmokingStatus", "PregnancyStatus", "PatientSexNeutered"}
QUASI_IDENTIFIERS = {
    "Occupation", "PatientReligiousPreference", "MilitaryRank", "BranchOfService",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientBirthName",
    "CountryOfResidence", "RegionOfResidence", "IdentifyingComments", "ResponsiblePerson",
}
PATIENT_FREE_TEXT = {
    "PatientComments", "AdditionalPatientHistory", "Allergies", "MedicalAlerts", "PatientState",
    "SpecialNeeds", "PreMedication", "ReasonForVisit", "VisitComments",
    "AdmittingDiagnosesDescription",
}
_BOOL_FLAGS = ("retain_patient_characteristics", "retain_longitudinal_modified_dates",
               "retain_device_identity", "clean_descriptors", "retain_safe_private")


def _every_options(free_text: object = True) -> list[Options]:
    return [Options(accept_patient_free_text_risk=free_text, **dict(zip(_BOOL_FLAGS, values)))
            for values in itertools.product((True, False), repeat=len(_BOOL_FLAGS))]


def test_every_c_or_k_row_under_an_offered_option_is_decided_with_a_reason() -> None:
    decided = {row["tag"]: row for row in DECISIONS["rows"]}
    for row in _data("ps3.15-e1-1-2024.json")["rows"]:
        actions = {v for k, v in row.get("options", {}).items() if k in OFFERED_COLUMNS}
        if row["keyword"] and actions & {"C", "K"}:
            assert row["tag"] in decided, row["keyword"]
    for row in DECISIONS["rows"]:
        assert row["decision"] in DECISIONS["_decisions"], row
        assert len(row["reason"]) > 20 and row["kind"], row
        rule = load_profile().rules[int(row["tag"], 16)]
        assert rule.keyword == row["keyword"] and rule.decision == row["decision"]


def test_retain_patient_characteristics_keeps_only_what_buyers_use() -> None:
    profile = load_profile()
    for rule in profile.rules.values():
        if "rtnPatCharsOpt" in dict(rule.options):
            kept = profile.action_for(rule.tag, Options()) == KEEP
            assert kept == (rule.keyword in KEPT_CHARACTERISTICS), rule.keyword


@pytest.mark.parametrize("keyword", sorted(QUASI_IDENTIFIERS | {"SelectorASValue"}))
def test_quasi_identifiers_take_the_basic_action_under_every_option(keyword: str) -> None:
    tag, vr = tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword))
    for options in _every_options():
        expected = "dummy" if keyword == "SelectorASValue" else "remove"
        assert decide(tag, vr, options).op == expected, options


@pytest.mark.parametrize("keyword", sorted(PATIENT_FREE_TEXT))
def test_patient_free_text_is_removed_unless_opted_in_with_clean_descriptors(keyword: str) -> None:
    tag, vr = tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword))
    assert keyword in load_profile().patient_free_text
    for options in _every_options(free_text=False):
        assert decide(tag, vr, options) is A_REMOVE, options
    for options in _every_options(free_text={keyword}):
        expected = CLEAN_PATIENT_TEXT if options.clean_descriptors else "remove"
        assert decide(tag, vr, options).op == expected


def test_pregnancy_status_is_coded_and_kept() -> None:
    assert dictionary_VR(tag_for_keyword("PregnancyStatus")) == "US"
    assert decide(tag_for_keyword("PregnancyStatus"), "US", Options()) is A_KEEP


def test_patient_free_text_option_is_off_by_default_and_named_as_a_risk() -> None:
    assert "accept_patient_free_text_risk" in Options.names()
    assert Options().accept_patient_free_text_risk == frozenset()
    assert Options(accept_patient_free_text_risk=True).accept_patient_free_text_risk == \
        load_profile().patient_free_text
    opts = Options.from_flags(["accept-patient-free-text-risk=PatientComments,Allergies"])
    assert opts.accept_patient_free_text_risk == {"PatientComments", "Allergies"}
    assert Options.from_flags(["accept_patient_free_text_risk=false"]) == Options()
    assert Options(accept_patient_free_text_risk=["PatientComments"]) == \
        Options(accept_patient_free_text_risk="PatientComments")
    with pytest.raises(ValueError, match="not a patient free-text attribute: Occupation"):
        Options(accept_patient_free_text_risk={"Occupation"})
    assert "PatientComments" in describe(Options(accept_patient_free_text_risk={"PatientComments"}))
    assert "free text" not in describe(Options())
