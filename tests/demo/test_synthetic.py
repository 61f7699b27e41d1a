"""Tests for the synthetic DICOM generator (no database, no Django)."""

import io
import sys
import time
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pydicom
import pytest

# Make the project root importable even without a pytest config / Django plugin.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from demo.synthetic import (  # noqa: E402
    DEMO_SPECS,
    FakePatient,
    fake_patients,
    generate_demo_dataset,
    generate_study_files,
    make_instance,
    make_uid,
    to_bytes,
    write_zip,
)

SOP = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}


def _instance(modality="CT", seed=0, **kw):
    patient = fake_patients(1, seed=seed)[0]
    ent = [str(seed), modality]
    return patient, make_instance(
        patient=patient,
        modality=modality,
        study_uid=make_uid("st", *ent),
        series_uid=make_uid("se", *ent),
        sop_uid=make_uid("sop", *ent),
        **kw,
    )


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


# --------------------------------------------------------------------------- patients


def test_fake_patients_deterministic_and_plausible():
    a = fake_patients(30, seed=7)
    b = fake_patients(30, seed=7)
    assert a == b
    assert all(isinstance(p, FakePatient) for p in a)
    assert len({p.patient_id for p in a}) == 30
    assert {p.sex for p in a} == {"F", "M"}
    for p in a:
        assert p.patient_id.startswith("MRN") and p.patient_id[3:].isdigit()
        assert p.name.count("^") >= 1 and p.name == p.name.upper()
        assert len(p.birth_date) == 8 and p.birth_date.isdigit()
        assert p.age.endswith("Y") and 18 <= int(p.age[:3]) <= 90
    assert fake_patients(30, seed=8) != a


# --------------------------------------------------------------------------- instances


@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US"])
def test_instance_round_trip(modality):
    patient, ds = _instance(modality, rows=32, columns=48)
    data = to_bytes(ds)
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    back = _read(data)
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert back.SOPClassUID == SOP[modality]
    assert back.file_meta.MediaStorageSOPClassUID == SOP[modality]
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.Modality == modality
    arr = back.pixel_array
    assert arr.shape == (32, 48)
    assert arr.std() > 0
    if modality == "US":
        assert back.BitsAllocated == 8 and arr.dtype == np.uint8
        assert back.BurnedInAnnotation == "NO"
    else:
        assert back.BitsAllocated == 16 and back.PhotometricInterpretation == "MONOCHROME2"
    assert back.StudyTime and back.FrameOfReferenceUID and back.PixelSpacing
    if modality in ("CT", "MR"):
        assert len(back.ImagePositionPatient) == 3
        assert len(back.ImageOrientationPatient) == 6
        assert back.SliceThickness
    if modality == "CT":
        assert back.KVP
    if modality == "MR":
        assert back.MagneticFieldStrength in (1.5, 3.0)
        assert back.EchoTime and back.RepetitionTime


def test_instance_contains_fake_phi():
    patient, ds = _instance("CT")
    back = _read(to_bytes(ds))
    assert str(back.PatientName) == patient.name
    assert back.PatientID == patient.patient_id
    assert back.PatientBirthDate == patient.birth_date
    assert back.PatientSex == patient.sex
    for kw in (
        "PatientAge", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
        "AccessionNumber", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
        "PerformingPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber",
        "StudyID", "StudyDescription", "SeriesDescription",
    ):
        assert str(back.get(kw, "")).strip(), kw
    # private block holding the patient name
    block = back.private_block(0x0009, "ACME 1.0")
    assert patient.family_name in block[0x10].value
    # nested PHI
    req = back.RequestAttributesSequence[0]
    assert str(req.RequestingPhysician)
    assert req.ReferencedStudySequence[0].ReferencedSOPInstanceUID == back.StudyInstanceUID
    assert back.ReferencedStudySequence[0].ReferencedSOPInstanceUID == back.StudyInstanceUID


def test_free_text_phi_appears_in_some_descriptions():
    files = generate_demo_dataset(DEMO_SPECS[0], seed=1)
    descs = set()
    for _, data in files:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        descs.add((ds.StudyDescription, ds.SeriesDescription, ds.PatientID, ds.PatientName.family_name))
    with_phi = [d for d in descs if d[2] in d[0] or d[2] in d[1] or d[3] in d[0]]
    assert with_phi, "expected some descriptions to mention the patient"
    assert len(with_phi) < len(descs), "expected some clean descriptions too"


def test_overrides_set_and_delete():
    _, ds = _instance("US", BurnedInAnnotation="YES", PatientAddress=None, StationName="X1")
    back = _read(to_bytes(ds))
    assert back.BurnedInAnnotation == "YES"
    assert "PatientAddress" not in back
    assert back.StationName == "X1"


def test_make_instance_rejects_unknown_modality():
    with pytest.raises(ValueError):
        _instance("PT")


# --------------------------------------------------------------------------- studies


def test_generate_study_files_consistent_uids_and_names():
    patient = fake_patients(1, seed=3)[0]
    files = generate_study_files(patient=patient, modality="MR", n_series=2, n_instances=3,
                                 study_index=0, seed=3, rows=32, columns=32)
    assert len(files) == 6
    datasets = [_read(b) for _, b in files]
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.SeriesInstanceUID for d in datasets}) == 2
    assert len({d.SOPInstanceUID for d in datasets}) == 6
    name, _ = files[0]
    study_uid = datasets[0].StudyInstanceUID
    assert name == f"{patient.patient_id}/{study_uid}/series1/IM0001.dcm"
    assert files[-1][0].endswith("series2/IM0003.dcm")
    assert [d.InstanceNumber for d in datasets[:3]] == [1, 2, 3]
    assert "2015" <= datasets[0].StudyDate[:4] <= "2024"


def test_deterministic_bytes_per_seed():
    patient = fake_patients(1, seed=11)[0]
    kw = dict(patient=patient, modality="CT", n_series=1, n_instances=2, study_index=0, rows=32, columns=32)
    a = generate_study_files(seed=11, **kw)
    b = generate_study_files(seed=11, **kw)
    assert a == b
    assert generate_demo_dataset(DEMO_SPECS[3], seed=5) == generate_demo_dataset(DEMO_SPECS[3], seed=5)


def test_different_seeds_give_different_uids():
    def uids(seed):
        return {_read(b).SOPInstanceUID for _, b in generate_demo_dataset(DEMO_SPECS[2], seed=seed)}

    u1, u2 = uids(1), uids(2)
    assert len(u1) == DEMO_SPECS[2]["n_patients"] * DEMO_SPECS[2]["studies_per_patient"]
    assert not (u1 & u2)


def test_write_zip_members():
    patient = fake_patients(1, seed=4)[0]
    files = generate_study_files(patient=patient, modality="CR", n_series=1, n_instances=3,
                                 study_index=0, seed=4, rows=32, columns=32)
    blob = write_zip(files)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [n for n, _ in files]
        for name, data in files:
            assert zf.read(name) == data
    assert write_zip(files) == blob


# --------------------------------------------------------------------------- demo specs


def test_demo_specs_shape():
    assert {s["modality"] for s in DEMO_SPECS} == {"CT", "MR", "CR", "US"}
    total = 0
    for s in DEMO_SPECS:
        for key in ("title", "description", "modality", "body_part", "plan", "licence_type", "licence_text",
                    "n_patients", "studies_per_patient", "n_series", "n_instances"):
            assert key in s, key
        assert Decimal(s["plan"]["price"]) > 0
        total += s["n_patients"] * s["studies_per_patient"] * s["n_series"] * s["n_instances"]
    assert 200 <= total <= 500


def test_all_demo_datasets_generate():
    t0 = time.perf_counter()
    total = 0
    for i, spec in enumerate(DEMO_SPECS):
        files = generate_demo_dataset(spec, seed=42)
        expected = spec["n_patients"] * spec["studies_per_patient"] * spec["n_series"] * spec["n_instances"]
        assert len(files) == expected
        assert len({n for n, _ in files}) == expected
        ds = _read(files[0][1])
        assert ds.SOPClassUID == SOP[spec["modality"]]
        assert ds.BodyPartExamined in (spec.get("body_parts") or [spec["body_part"]])
        mans = {_read(b).Manufacturer for _, b in files}
        assert mans <= {m for m, _ in spec["scanners"]}
        total += len(files)
    elapsed = time.perf_counter() - t0
    print(f"\ngenerated {total} demo instances in {elapsed:.2f}s")
    assert 200 <= total <= 500


def test_make_uid_deterministic_and_valid():
    a = make_uid("study", 1, "MRN1")
    assert a == make_uid("study", 1, "MRN1")
    assert a != make_uid("study", 2, "MRN1")
    assert make_uid("x", "1", "23") != make_uid("x", "12", "3")
    assert pydicom.uid.UID(a).is_valid and len(a) <= 64
