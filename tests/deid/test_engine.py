from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pydicom
import pytest
from deid_factory import (
    DEEP_REF_UID,
    DEVICE_VALUES,
    KEY,
    PHI_VALUES,
    REF_UID,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    make_dataset,
    to_bytes,
)
from phi_corpus import REF_UID as PHI_REF_UID
from phi_corpus import SERIES_UID as PHI_SERIES_UID
from phi_corpus import safe_private_dataset
from pydicom.dataset import Dataset

from deid import DeidReport, Options, deidentify_file, fast
from deid.dates import shift_days
from deid.profile import safe_private_vr
from deid.report import METADATA_KEYS
from deid.uids import patient_pseudonym, remap_uid


def run(src: Path, options: Options | None = None, key: bytes = KEY) -> tuple[Dataset, DeidReport, bytes]:
    out = io.BytesIO()
    report = deidentify_file(src, out, key=key, options=options)
    data = out.getvalue()
    return pydicom.dcmread(io.BytesIO(data)), report, data


def test_it_leaves_no_planted_phi_anywhere_in_the_output_bytes(phi_file: Path) -> None:
    _, report, data = run(phi_file, Options(retain_device_identity=False))
    lowered = data.lower()
    for value in PHI_VALUES + DEVICE_VALUES:
        assert value.lower().encode() not in lowered, value
    assert report.verified is True


def test_default_options_leave_no_patient_phi_in_the_output_bytes(phi_file: Path) -> None:
    _, _, data = run(phi_file)
    for value in PHI_VALUES:
        assert value.lower().encode() not in data.lower(), value


def test_it_writes_part10_with_zeroed_preamble_and_rebuilt_meta(phi_file: Path) -> None:
    out, _, data = run(phi_file)
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert out.file_meta.ImplementationClassUID != pydicom.dcmread(phi_file).file_meta.ImplementationClassUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_it_accepts_file_objects_as_source_and_destination(phi_file: Path) -> None:
    out = io.BytesIO()
    deidentify_file(io.BytesIO(phi_file.read_bytes()), out, key=KEY)
    assert pydicom.dcmread(io.BytesIO(out.getvalue())).PatientIdentityRemoved == "YES"


def test_it_writes_to_a_path_destination(phi_file: Path, tmp_path: Path) -> None:
    dst = tmp_path / "sub" / "out.dcm"
    deidentify_file(phi_file, dst, key=KEY)
    assert pydicom.dcmread(dst).Modality == "CT"
    assert [p.name for p in dst.parent.iterdir()] == ["out.dcm"]  # no temp leftovers


def test_it_keeps_pixel_data_byte_for_byte(phi_file: Path) -> None:
    out, _, _ = run(phi_file)
    assert out.PixelData == pydicom.dcmread(phi_file).PixelData


# --- one test per action code --------------------------------------------------------

def test_action_x_removes_the_attribute(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert "PerformingPhysicianName" not in out
    assert "PatientAddress" not in out
    assert "OtherPatientIDs" not in out
    assert report.actions["removed"] > 0


def test_action_z_keeps_the_attribute_empty(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert out["AccessionNumber"].value == ""
    assert out["PatientBirthDate"].value == ""
    assert out["ReferringPhysicianName"].value == ""
    assert report.actions["zeroed"] >= 3


def test_action_d_puts_a_dummy_of_the_right_vr(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert out.ClinicalTrialSponsorName == "ANONYMIZED"
    assert report.actions["dummied"] >= 1


def test_action_k_keeps_patient_characteristics_with_the_option(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert (out.PatientSex, out.PatientAge, str(out.PatientWeight)) == ("F", "045Y", "70")
    assert report.actions["kept"] > 0


def test_action_c_cleans_descriptors_and_shifts_dates(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert out.StudyDescription == "CT CHEST for born"
    assert out.ProtocolName == "CHEST ROUTINE"
    assert report.actions["cleaned"] >= 2
    assert report.actions["date_shifted"] >= 4


def test_action_u_remaps_every_instance_uid(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert out.StudyInstanceUID == remap_uid(STUDY_UID, KEY)
    assert out.SeriesInstanceUID == remap_uid(SERIES_UID, KEY)
    assert out.SOPInstanceUID == remap_uid(SOP_UID, KEY)
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # not remapped
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert report.actions["uid_remapped"] >= 6


def test_combined_codes_take_the_strict_reading(phi_file: Path) -> None:
    opts = Options(retain_longitudinal_modified_dates=False, clean_descriptors=False,
                   retain_device_identity=False)
    out, _, _ = run(phi_file, opts)
    assert "AcquisitionDate" not in out  # X/Z -> X
    assert "ProtocolName" not in out  # X/D -> X
    assert "InstitutionName" not in out and "StationName" not in out  # X/Z/D -> X
    assert out["ContentDate"].value == ""  # Z/D -> Z
    assert "ReferencedImageSequence" in out  # X/Z/U* -> U (kept, UIDs remapped)


# --- options -------------------------------------------------------------------------

def test_without_patient_characteristics_sex_is_emptied_and_age_removed(phi_file: Path) -> None:
    out, report, _ = run(phi_file, Options(retain_patient_characteristics=False))
    assert out["PatientSex"].value == ""
    assert "PatientAge" not in out and "PatientWeight" not in out
    assert report.metadata["patient_age"] == ""
    assert "113108" not in report.method_codes


def test_ages_over_89_are_capped(make_file: Callable[..., Path]) -> None:
    out, _, _ = run(make_file(PatientAge="094Y"))
    assert out.PatientAge == "090Y"


def test_without_modified_dates_dates_are_emptied_or_removed(phi_file: Path) -> None:
    out, report, _ = run(phi_file, Options(retain_longitudinal_modified_dates=False))
    assert out["StudyDate"].value == ""
    assert "SeriesDate" not in out and "AcquisitionDateTime" not in out
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert report.metadata["study_date"] is None
    assert "date_shifted" not in report.actions


def test_with_modified_dates_all_dates_move_by_the_same_days(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    days = shift_days("pid:MRN123456", KEY)
    expected = date.fromordinal(date(2020, 3, 15).toordinal() - days)
    assert report.metadata["study_date"] == expected
    assert out.StudyDate == out.SeriesDate == out.ContentDate == expected.strftime("%Y%m%d")
    assert out.AcquisitionDateTime == expected.strftime("%Y%m%d") + "101500.000000"
    assert out.StudyTime == "101500"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_without_device_identity_serial_and_station_go(phi_file: Path) -> None:
    kept, _, _ = run(phi_file, Options(retain_device_identity=True))
    assert kept.DeviceSerialNumber == "SN-4242" and kept.StationName == "CTROOM1"
    out, report, _ = run(phi_file)  # the default: device identity is not retained
    assert "DeviceSerialNumber" not in out and "StationName" not in out
    assert out.Manufacturer == "ACME"  # not in Table E.1-1: allow-listed
    assert "113109" not in report.method_codes


def test_it_verifies_even_when_device_identity_is_kept(phi_file: Path) -> None:
    # Station name / serial are device identity, not in the verifier's PHI list.
    _, report, _ = run(phi_file, Options(retain_device_identity=True))
    assert report.verified


def test_without_clean_descriptors_free_text_is_removed(phi_file: Path) -> None:
    out, report, _ = run(phi_file, Options(clean_descriptors=False))
    assert "StudyDescription" not in out and "SeriesDescription" not in out
    assert report.metadata["study_description"] == ""


def test_safe_private_is_kept_only_with_the_option(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert not any(elem.tag.is_private for elem in out)
    assert report.actions["private_removed"] == 4
    out, report, _ = run(phi_file, Options(retain_safe_private=True))
    private = {elem.tag: elem.value for elem in out if elem.tag.is_private}
    assert private == {0x00190010: "SIEMENS MR HEADER", 0x0019100C: "1000"}
    assert "113111" in report.method_codes


@pytest.mark.parametrize("with_sequence", [True, False], ids=["pydicom-path", "fast-path"])
def test_safe_private_attributes_are_kept_as_the_profile_keeps_public_ones(
        tmp_path: Path, with_sequence: bool) -> None:
    """Table E.3.10-1 attributes: values kept, a UID remapped like the one it names, a
    sequence kept with the profile applied to its item; an element of another VR than
    the table's, and an unlisted one, removed."""
    src = tmp_path / "safe.dcm"
    src.write_bytes(to_bytes(safe_private_dataset(with_sequence)))
    out, report, _ = run(src, Options(retain_safe_private=True))
    private = {int(elem.tag) for elem in out if elem.tag.is_private}
    assert out[0x20011003].value == 1000.0 and out[0x20011050].value == "ARROW"
    assert out[0x00991002].value == out.SeriesInstanceUID != PHI_SERIES_UID
    assert {0x20011001, 0x2001100D}.isdisjoint(private)
    assert {0x20010010, 0x00990010} <= private
    if with_sequence:
        (item,) = out[0x20011073].value
        assert item.ReferencedSOPInstanceUID == remap_uid(PHI_REF_UID, KEY)
        assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.12.1"
        assert not item.get("PatientName") and not any(e.tag.is_private for e in item)
    assert report.actions["private_kept"] == 3 + with_sequence


@pytest.mark.parametrize("vr, listed, kept", [
    ("FL", "FL", True), ("LO", "FL", False), ("UN", "FL", False), ("OB", "OW/OB", True),
    ("OW", "OW/OB", True), ("SQ", "", True), ("UN", "", False),
])
def test_a_safe_private_element_must_have_the_tables_vr(vr: str, listed: str, kept: bool) -> None:
    assert safe_private_vr(vr, listed) is kept


def _functional_groups(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pydicom-path"])
def test_enhanced_multiframe_keeps_its_geometry_per_frame(
        tmp_path: Path, fast_path: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enhanced CT/MR hold spacing, orientation and per-frame positions in functional
    group sequences: buyers need them; text inside them still goes. The catalog's slice
    thickness comes from there too."""
    if not fast_path:
        monkeypatch.setattr(fast, "deidentify_raw", lambda *args, **kwargs: None)
    ds = make_dataset()
    del ds.SliceThickness  # enhanced objects have it in the functional groups only
    ds.NumberOfFrames = 3
    ds.SharedFunctionalGroupsSequence = [_functional_groups(
        PixelMeasuresSequence=[_functional_groups(PixelSpacing=[0.5, 0.5], SliceThickness=1.25)],
        PlaneOrientationSequence=[_functional_groups(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        CTExposureSequence=[_functional_groups(ExposureInmAs=120.0, CTDIvol=11.5)])]
    ds.PerFrameFunctionalGroupsSequence = [_functional_groups(
        PlanePositionSequence=[_functional_groups(ImagePositionPatient=[0, 0, -1.25 * z])],
        FrameContentSequence=[_functional_groups(
            FrameAcquisitionNumber=z, DimensionIndexValues=[1, z + 1],
            FrameLabel="DOE^JANE", FrameComments="MRN123456 frame")])
        for z in range(3)]
    src = tmp_path / "enhanced.dcm"
    src.write_bytes(to_bytes(ds))
    out, report, data = run(src)
    assert report.metadata["slice_thickness"] == 1.25 and "SliceThickness" not in out
    shared = out.SharedFunctionalGroupsSequence[0]
    assert shared.PixelMeasuresSequence[0].PixelSpacing == [0.5, 0.5]
    assert shared.PlaneOrientationSequence[0].ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    assert shared.CTExposureSequence[0].ExposureInmAs == 120.0
    frames = out.PerFrameFunctionalGroupsSequence
    assert [f.PlanePositionSequence[0].ImagePositionPatient[2] for f in frames] == [0, -1.25, -2.5]
    content = frames[2].FrameContentSequence[0]
    assert content.DimensionIndexValues == [1, 3] and content.FrameAcquisitionNumber == 2
    assert "FrameLabel" not in content and content.FrameComments == "frame"  # Clean Descriptors
    assert b"DOE" not in data and b"MRN123456" not in data


def test_burned_in_risk_can_be_accepted(make_file: Callable[..., Path]) -> None:
    out, _, _ = run(make_file(Modality="US"), Options(accept_burned_in_risk=True))
    assert out.Modality == "US"


# --- structure -----------------------------------------------------------------------

def test_nested_sequences_are_processed_at_every_depth(phi_file: Path) -> None:
    out, _, _ = run(phi_file)
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == remap_uid(REF_UID, KEY)
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ref["PatientName"].value == ""
    deep = ref.SourceImageSequence[0]
    assert deep.ReferencedSOPInstanceUID == remap_uid(DEEP_REF_UID, KEY)
    assert "OperatorsName" not in deep
    # Request Attributes Sequence is X, or C (cleaned item by item) with Clean Descriptors.
    assert len(out.RequestAttributesSequence[0]) == 0
    plain, _, _ = run(phi_file, Options(clean_descriptors=False))
    assert "RequestAttributesSequence" not in plain
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Chest"


def test_overlay_and_curve_groups_are_removed(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert not [e for e in out if e.tag.group & 0xFF00 in (0x5000, 0x6000)]
    assert report.actions["overlay_removed"] == 5


def test_attributes_outside_table_and_allow_list_are_removed(phi_file: Path) -> None:
    out, _, _ = run(phi_file)
    assert "ContrastBolusRoute" not in out
    for keyword in ("Modality", "Manufacturer", "BodyPartExamined", "KVP", "SliceThickness",
                    "Rows", "ImagePositionPatient", "SeriesNumber", "ImageType"):
        assert keyword in out, keyword


def test_patient_pseudonym_is_consistent_per_key_and_patient(phi_file: Path,
                                                             make_file: Callable[..., Path]) -> None:
    a, _, _ = run(phi_file)
    b, _, _ = run(make_file("other.dcm", SOPInstanceUID="1.2.3.4.5.6.7"))
    c, _, _ = run(make_file("p2.dcm", PatientID="MRN999"))
    assert a.PatientID == b.PatientID == str(a.PatientName) == patient_pseudonym("pid:MRN123456", KEY)
    assert a.PatientID.startswith("P-") and len(a.PatientID) == 14
    assert c.PatientID != a.PatientID


def test_uids_are_consistent_across_calls_and_differ_across_keys(phi_file: Path) -> None:
    a, _, _ = run(phi_file)
    b, _, _ = run(phi_file)
    c, _, _ = run(phi_file, key=b"x" * 32)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SOPInstanceUID == b.SOPInstanceUID
    assert a.StudyInstanceUID != c.StudyInstanceUID
    assert a.PatientID != c.PatientID


def test_attestation_says_what_was_done(phi_file: Path) -> None:
    out, report, _ = run(phi_file)
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == report.method_codes == ["113100", "113107", "113108", "113105"]
    assert {item.CodingSchemeDesignator for item in out.DeidentificationMethodCodeSequence} == {"DCM"}
    assert all(len(v) <= 64 for v in out.DeidentificationMethod)
    assert report.profile.startswith("PS3.15 2024 Basic")


def test_report_metadata_has_exactly_the_catalog_keys_and_no_phi(phi_file: Path) -> None:
    _, report, _ = run(phi_file)
    assert tuple(report.metadata) == METADATA_KEYS
    m = report.metadata
    assert (m["modality"], m["body_part"], m["manufacturer"], m["model"]) == ("CT", "CHEST", "ACME", "SCAN 3000")
    assert (m["rows"], m["columns"], m["frames"], m["series_number"], m["instance_number"]) == (8, 8, 1, 3, 7)
    assert m["sop_uid"] == remap_uid(SOP_UID, KEY)
    text = repr(report).lower()
    for value in PHI_VALUES:
        assert value.lower() not in text, value


def test_it_rejects_a_short_key(phi_file: Path) -> None:
    with pytest.raises(ValueError):
        deidentify_file(phi_file, io.BytesIO(), key=b"short")
