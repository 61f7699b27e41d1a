"""Synthetic DICOM builders for the deid tests (fake PHI only, never real patient data)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

KEY = b"test-provider-key-0123456789abcdef"
OTHER_KEY = b"another-provider-key-fedcba987654"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"
SOP_UID = "1.2.826.0.1.3680043.8.498.1003"
FOR_UID = "1.2.826.0.1.3680043.8.498.1004"
REF_UID = "1.2.826.0.1.3680043.8.498.1005"
DEEP_REF_UID = "1.2.826.0.1.3680043.8.498.1006"

# Every identifying value planted somewhere in the synthetic file.
PHI_VALUES = [
    "DOE", "JANE", "MRN123456", "19800101", "ACC778899", "SAINT ELSEWHERE", "Main Street",
    "HOUSE", "GREGORY", "WILBY", "RATCHED", "OLDMRN999",
    STUDY_UID, SERIES_UID, SOP_UID, FOR_UID, REF_UID, DEEP_REF_UID,
]

# Device identity: kept by default (Retain Device Identity Option), removed without it.
DEVICE_VALUES = ["SN-4242", "CTROOM1"]


def make_dataset(**overrides: Any) -> Dataset:
    """A CT instance full of fake PHI in all the usual hiding places."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FOR_UID
    ds.StudyDate = "20200315"
    ds.SeriesDate = "20200315"
    ds.AcquisitionDate = "20200315"
    ds.ContentDate = "20200315"
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = "20200315101500.000000"
    ds.AccessionNumber = "ACC778899"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "SCAN 3000"
    ds.DeviceSerialNumber = "SN-4242"
    ds.StationName = "CTROOM1"
    ds.InstitutionName = "SAINT ELSEWHERE HOSPITAL"
    ds.InstitutionAddress = "12 Main Street, Springfield"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.PerformingPhysicianName = "WILBY^MARCUS"
    ds.OperatorsName = "RATCHED^MILDRED"
    ds.StudyDescription = "CT CHEST for DOE JANE MRN123456 born 1980-01-01"
    ds.SeriesDescription = "AXIAL 5mm"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.ClinicalTrialSponsorName = "ACME TRIALS INC"
    ds.ContrastBolusRoute = "IV"  # neither in Table E.1-1 nor on the allow-list
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MRN123456"
    ds.OtherPatientIDs = "OLDMRN999"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.PatientAge = "045Y"
    ds.PatientWeight = "70"
    ds.PatientAddress = "12 Main Street, Springfield"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "5"
    ds.KVP = "120"
    ds.SeriesNumber = "3"
    ds.InstanceNumber = "7"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]

    # Nested sequences: reference UIDs two levels deep, with names hidden inside.
    deep = Dataset()
    deep.ReferencedSOPClassUID = CTImageStorage
    deep.ReferencedSOPInstanceUID = DEEP_REF_UID
    deep.OperatorsName = "RATCHED^MILDRED"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = REF_UID
    ref.PatientName = "DOE^JANE"
    ref.SourceImageSequence = Sequence([deep])
    ds.ReferencedImageSequence = Sequence([ref])
    request = Dataset()
    request.RequestingPhysician = "HOUSE^GREGORY"
    request.ScheduledProcedureStepID = "SPS-MRN123456"
    ds.RequestAttributesSequence = Sequence([request])
    region = Dataset()
    region.CodeValue = "T-D3000"
    region.CodingSchemeDesignator = "SRT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([region])

    # Private blocks: one with PHI, one on the safe-private list.
    block = ds.private_block(0x0029, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", "DOE^JANE MRN123456")
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")

    # Overlay and curve groups carrying text.
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", "DOE JANE overlay")
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x50002500, "LO", "DOE curve")

    ds.Rows = 8
    ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()

    for name, value in overrides.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    return ds


def to_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ts = UID(transfer_syntax)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=ts.is_implicit_VR,
             little_endian=ts.is_little_endian)
    return buffer.getvalue()


def elements_of(data: bytes) -> dict[tuple[int, ...], tuple[str, object]]:
    """Every element at any depth (path of tags and item indexes) -> (VR, value)."""
    ds = dcmread(io.BytesIO(data))
    found: dict[tuple[int, ...], tuple[str, object]] = {}

    def visit(dataset: Dataset, path: tuple[int, ...]) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for index, item in enumerate(elem.value):
                    visit(item, (*path, int(elem.tag), index))
            else:
                found[(*path, int(elem.tag))] = (elem.VR, elem.value)
    visit(ds.file_meta, ())
    visit(ds, ())
    return found
