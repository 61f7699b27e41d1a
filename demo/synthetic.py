"""Synthetic DICOM generator.

Pure pydicom + numpy (no Django imports).  Produces realistic-looking Part 10
instances that carry *fake* PHI in the usual places (patient module, free-text
descriptions, private tags, nested sequences) so that de-identification and
ingestion code can be exercised without any real patient data and without any
network access.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import random
import zipfile
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "FakePatient",
    "fake_patients",
    "make_instance",
    "to_bytes",
    "generate_study_files",
    "DEMO_SPECS",
    "generate_demo_dataset",
    "write_zip",
    "SOP_CLASS_UIDS",
    "make_uid",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

SOP_CLASS_UIDS: dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
}

_FIRST_NAMES_F = [
    "JANE", "MARY", "LINDA", "SUSAN", "KAREN", "NANCY", "LISA", "EMMA",
    "OLIVIA", "SOPHIA", "GRACE", "HANNAH", "CLAIRE", "RUTH", "ANNA", "ELENA",
]
_FIRST_NAMES_M = [
    "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "JAMES", "THOMAS",
    "DANIEL", "PAUL", "MARK", "GEORGE", "PETER", "HENRY", "SAMUEL", "LUCAS",
    "OMAR",
]
_LAST_NAMES = [
    "DOE", "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA",
    "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ",
    "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN",
    "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "CLARK", "LEWIS",
    "ROBINSON", "WALKER", "YOUNG", "KING", "NGUYEN", "MUELLER", "SCHMIDT",
]
_STREETS = [
    "MAPLE AVE", "OAK ST", "PINE RD", "CEDAR LN", "ELM ST", "LAKE DR",
    "HILLCREST BLVD", "RIVER RD", "PARK PL", "WASHINGTON ST",
]
_CITIES = [
    ("SPRINGFIELD", "IL", "62701"), ("RIVERTON", "WY", "82501"),
    ("FAIRVIEW", "TN", "37062"), ("GREENVILLE", "SC", "29601"),
    ("MADISON", "WI", "53703"), ("SALEM", "OR", "97301"),
    ("FRANKLIN", "MA", "02038"), ("CLINTON", "IA", "52732"),
]
_INSTITUTIONS = [
    ("ST. MERCY GENERAL HOSPITAL", "1200 HEALTH PKWY, SPRINGFIELD IL 62701"),
    ("RIVERTON UNIVERSITY MEDICAL CENTER", "45 CAMPUS DR, RIVERTON WY 82501"),
    ("LAKESIDE IMAGING CLINIC", "880 LAKESHORE BLVD, MADISON WI 53703"),
    ("NORTHGATE COMMUNITY HOSPITAL", "3 NORTHGATE RD, SALEM OR 97301"),
]
_PHYSICIANS = [
    "HOUSE^GREGORY^^DR", "GREY^MEREDITH^^DR", "SHEPHERD^DEREK^^DR",
    "CARTER^JOHN^^DR", "ROSS^DOUG^^DR", "QUINN^MICHAELA^^DR",
    "KILDARE^JAMES^^DR", "WELBY^MARCUS^^DR",
]
_OPERATORS = ["TECH^ANNA", "RADTECH^BOB", "SONO^CARLA", "NGUYEN^TOM", "PATEL^RIA"]

# default scanner per modality (manufacturer, model, station prefix)
_DEFAULT_SCANNER = {
    "CT": ("SIEMENS", "SOMATOM Force"),
    "MR": ("Philips", "Ingenia"),
    "CR": ("Agfa", "CR 85-X"),
    "US": ("GE Healthcare", "LOGIQ E10"),
}

_DEFAULT_BODY_PART = {"CT": "CHEST", "MR": "BRAIN", "CR": "CHEST", "US": "ABDOMEN"}

_PRIVATE_CREATOR = "ACME 1.0"


# ---------------------------------------------------------------------------
# Patients
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FakePatient:
    patient_id: str  # e.g. "MRN482913"
    name: str  # DICOM PN, e.g. "DOE^JANE^A"
    birth_date: str  # YYYYMMDD
    sex: str  # "F" / "M"
    age: str  # DICOM AS, e.g. "054Y"

    @property
    def family_name(self) -> str:
        return self.name.split("^")[0]

    @property
    def given_name(self) -> str:
        parts = self.name.split("^")
        return parts[1] if len(parts) > 1 else ""

    @property
    def display_name(self) -> str:
        """Free-text form, e.g. "DOE JANE"."""
        return f"{self.family_name} {self.given_name}".strip()


def _age_on(birth_date: str, on: str) -> int:
    b = _dt.date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
    d = _dt.date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    return d.year - b.year - ((d.month, d.day) < (b.month, b.day))


def fake_patients(n: int, *, seed: int) -> list[FakePatient]:
    """Return ``n`` deterministic fake patients (unique IDs and names)."""
    rng = random.Random(f"patients-{seed}")
    ref_date = "20240305"
    out: list[FakePatient] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    i = 0
    while len(out) < n:
        i += 1
        sex = "F" if rng.random() < 0.5 else "M"
        given = rng.choice(_FIRST_NAMES_F if sex == "F" else _FIRST_NAMES_M)
        family = rng.choice(_LAST_NAMES)
        middle = chr(ord("A") + rng.randrange(26))
        name = f"{family}^{given}^{middle}"
        if name in seen_names and i < 100 * (n + 1):
            continue
        pid = f"MRN{rng.randrange(100000, 1000000)}"
        if pid in seen_ids:
            continue
        age = rng.randint(18, 90)
        # birth date such that the age on ref_date is `age`
        ref = _dt.date(2024, 3, 5)
        birth = _dt.date(ref.year - age - 1, ref.month, ref.day) + _dt.timedelta(days=rng.randrange(1, 365))
        bd = birth.strftime("%Y%m%d")
        age_years = _age_on(bd, ref_date)
        seen_ids.add(pid)
        seen_names.add(name)
        out.append(
            FakePatient(
                patient_id=pid,
                name=name,
                birth_date=bd,
                sex=sex,
                age=f"{age_years:03d}Y",
            )
        )
    return out


# ---------------------------------------------------------------------------
# Pixel data
# ---------------------------------------------------------------------------


def _phantom(rows: int, columns: int, modality: str, rng: np.random.Generator,
             slice_pos: float = 0.0) -> np.ndarray:
    """A simple phantom: ellipse body with a few inner structures + noise."""
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    cy, cx = (rows - 1) / 2.0, (columns - 1) / 2.0
    ny, nx = (y - cy) / (rows / 2.0), (x - cx) / (columns / 2.0)
    body = (nx / 0.85) ** 2 + (ny / 0.7) ** 2 <= 1.0
    s = 0.1 * np.sin(slice_pos / 10.0)
    left = ((nx + 0.35) / 0.22) ** 2 + ((ny - s) / 0.35) ** 2 <= 1.0
    right = ((nx - 0.35) / 0.22) ** 2 + ((ny + s) / 0.35) ** 2 <= 1.0
    core = (nx / 0.12) ** 2 + ((ny + 0.1) / 0.12) ** 2 <= 1.0

    if modality == "CT":
        # stored values with RescaleIntercept -1024 -> HU
        img = np.zeros((rows, columns), np.float32)  # air -1024 HU
        img[body] = 1024 + 40  # soft tissue
        img[left | right] = 1024 - 800  # lungs
        img[core] = 1024 + 700  # bone-ish
        noise = 20.0
        maxv = 4095
    elif modality == "MR":
        img = np.zeros((rows, columns), np.float32)
        img[body] = 600
        img[left | right] = 1100
        img[core] = 250
        noise = 30.0
        maxv = 4095
    elif modality == "CR":
        img = np.full((rows, columns), 3600, np.float32)
        img[body] = 2200
        img[left | right] = 900
        img[core] = 3000
        noise = 40.0
        maxv = 4095
    else:  # US, 8-bit speckle
        img = np.zeros((rows, columns), np.float32)
        sector = (ny + 1.0 >= 0) & (np.abs(nx) <= (ny + 1.0) * 0.6)
        img[sector] = 90
        img[sector & (left | right)] = 40
        img[sector & core] = 180
        noise = 0.0
        maxv = 255
        speckle = rng.rayleigh(scale=25.0, size=(rows, columns)).astype(np.float32)
        img = np.where(sector, img + speckle - 30.0, 0.0)
    if noise:
        img = img + rng.normal(0.0, noise, size=(rows, columns)).astype(np.float32)
    img = np.clip(img, 0, maxv)
    return img.astype(np.uint8 if modality == "US" else np.uint16)


# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------


def make_uid(*parts: object) -> str:
    """Deterministic UID derived from ``parts``.

    Note: ``generate_uid(prefix=None, ...)`` ignores ``entropy_srcs`` and
    returns a random ``2.25.<uuid4>`` UID, so a real prefix (pydicom's root
    ``1.2.826.0.1.3680043.8.498.``) is used to get reproducible UIDs.  Parts
    are joined with a separator so ("1", "23") and ("12", "3") differ.
    """
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["|".join(map(str, parts))])


def hash_str(s: str) -> int:
    """Stable (non-salted) 64-bit string hash."""
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def _patient_rng(patient: FakePatient, salt: str) -> random.Random:
    return random.Random(f"{patient.patient_id}|{patient.name}|{salt}")


def _default_descriptions(modality: str, body_part: str) -> tuple[str, str]:
    bp = body_part.upper()
    if modality == "CT":
        return f"CT {bp} W/O CONTRAST", f"AXIAL {bp} 1.0MM"
    if modality == "MR":
        return f"MRI {bp} WO CONTRAST", f"T1 AX {bp}"
    if modality == "CR":
        return f"XR {bp} 2 VIEWS", f"{bp} PA"
    return f"US {bp} COMPLETE", f"{bp} B-MODE"


def make_instance(
    *,
    patient: FakePatient,
    modality: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    instance_number: int = 1,
    series_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    study_date: str = "20240305",
    body_part: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    rng_seed: int = 0,
    **overrides,
) -> Dataset:
    """Build one complete Part 10 dataset with fake PHI.

    ``overrides`` set any DICOM keyword (e.g. ``BurnedInAnnotation="YES"``);
    a value of ``None`` deletes the attribute.
    """
    modality = modality.upper()
    if modality not in SOP_CLASS_UIDS:
        raise ValueError(f"unsupported modality {modality!r}; expected one of {sorted(SOP_CLASS_UIDS)}")
    body_part = (body_part or _DEFAULT_BODY_PART[modality]).upper()
    d_man, d_model = _DEFAULT_SCANNER[modality]
    manufacturer = manufacturer or d_man
    model = model or d_model

    # Per-study stable choices (institution, physicians, accession) derive
    # from the patient + study UID so every instance of a study agrees.
    srng = _patient_rng(patient, f"study|{study_uid}")
    prng = _patient_rng(patient, "demographics")
    inst_name, inst_addr = _pick(srng, _INSTITUTIONS)
    referring = _pick(srng, _PHYSICIANS)
    performing = _pick(srng, _PHYSICIANS)
    requesting = _pick(srng, _PHYSICIANS)
    operator = _pick(srng, _OPERATORS)
    accession = f"ACC{srng.randrange(10**7, 10**8)}"
    study_id = f"S{srng.randrange(1000, 99999)}"
    study_time = f"{srng.randint(7, 18):02d}{srng.randrange(60):02d}{srng.randrange(60):02d}"
    street_no = prng.randint(1, 9999)
    street = _pick(prng, _STREETS)
    city, state, zipc = _pick(prng, _CITIES)
    phone = f"({prng.randint(201, 989)}) 555-{prng.randrange(10000):04d}"
    other_id = f"H{prng.randrange(10**6, 10**7)}"
    serial = f"{manufacturer[:2].upper()}{(hash_str(manufacturer + model)) % 10**6:06d}"
    station = f"{inst_name.split()[0].strip('.')[:6]}_{modality}{1 + (hash_str(model)) % 9}"

    study_desc, series_desc = _default_descriptions(modality, body_part)
    free = f"{patient.display_name} {patient.patient_id}"
    # "sometimes" put PHI into free text: deterministic per study / series
    if srng.random() < 0.6:
        study_desc = f"{study_desc} for {free}"
    serrng = random.Random(f"series|{series_uid}")
    if serrng.random() < 0.4:
        series_desc = f"{series_desc} {patient.patient_id}"

    # geometry
    if modality == "CT":
        pixel_spacing = [round(350.0 / columns, 4), round(350.0 / columns, 4)]
        slice_thickness = 1.0
    elif modality == "MR":
        pixel_spacing = [round(240.0 / columns, 4), round(240.0 / columns, 4)]
        slice_thickness = 5.0
    elif modality == "CR":
        pixel_spacing = [round(430.0 / columns, 4), round(430.0 / columns, 4)]
        slice_thickness = None
    else:
        pixel_spacing = [round(180.0 / columns, 4), round(180.0 / columns, 4)]
        slice_thickness = None
    z = -100.0 + (instance_number - 1) * (slice_thickness or 1.0)

    # ---- file meta --------------------------------------------------------
    sop_class = SOP_CLASS_UIDS[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SYNTH_1_0"

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128

    # ---- SOP common / general study ----------------------------------------
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = (["ORIGINAL", "PRIMARY", "AXIAL"] if modality in ("CT", "MR")
                    else ["ORIGINAL", "PRIMARY"])
    ds.InstanceCreationDate = study_date
    ds.InstanceCreationTime = study_time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.AcquisitionDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.AcquisitionTime = study_time
    ds.ContentTime = study_time
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.InstitutionName = inst_name
    ds.InstitutionAddress = inst_addr
    ds.ReferringPhysicianName = referring
    ds.StationName = station
    ds.StudyDescription = study_desc
    ds.SeriesDescription = series_desc
    ds.InstitutionalDepartmentName = "RADIOLOGY"
    ds.PerformingPhysicianName = performing
    ds.OperatorsName = operator
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = "VB20A" if "SIEMENS" in manufacturer.upper() else "5.1.2"

    # ---- patient --------------------------------------------------------------
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = inst_name.split()[0].strip(".") + "_MRN"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.OtherPatientIDs = other_id
    ds.PatientAge = f"{max(_age_on(patient.birth_date, study_date), 0):03d}Y"
    ds.PatientSize = round(prng.uniform(1.50, 1.95), 2)
    ds.PatientWeight = round(prng.uniform(48, 115), 1)
    ds.PatientAddress = f"{street_no} {street}, {city} {state} {zipc}"
    ds.PatientTelephoneNumbers = phone
    ds.AdditionalPatientHistory = f"Pt {patient.display_name} referred by {referring.split('^')[0]}"

    # ---- acquisition --------------------------------------------------------
    ds.BodyPartExamined = body_part
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    if modality == "CT":
        ds.KVP = 120
        ds.DataCollectionDiameter = 500
        ds.ReconstructionDiameter = 350
        ds.GantryDetectorTilt = 0
        ds.TableHeight = 150
        ds.RotationDirection = "CW"
        ds.ExposureTime = 500
        ds.XRayTubeCurrent = 200 + (instance_number % 5) * 10
        ds.Exposure = 100
        ds.ConvolutionKernel = "Br40"
        ds.PatientPosition = "HFS"
        ds.ScanOptions = "HELICAL MODE"
    elif modality == "MR":
        is3t = "3" in model or srng.random() < 0.5
        field = 3.0 if is3t else 1.5
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500.0
        ds.EchoTime = 15.0
        ds.NumberOfAverages = 1
        ds.ImagingFrequency = round(42.577 * field, 3)
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = 1
        ds.MagneticFieldStrength = field
        ds.SpacingBetweenSlices = slice_thickness
        ds.EchoTrainLength = 1
        ds.FlipAngle = 90
        ds.PatientPosition = "HFS"
    elif modality == "CR":
        ds.KVP = 110
        ds.ExposureTime = 20
        ds.XRayTubeCurrent = 250
        ds.ViewPosition = "PA"
        ds.PlateType = "CR MD4.0"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = pixel_spacing
    else:  # US
        ds.TransducerData = "C1-6-D"
        ds.ProcessingFunction = "ABDOMEN"

    # ---- relationship / frame of reference ------------------------------------
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    if modality in ("CT", "MR"):
        ds.ImagePositionPatient = [-pixel_spacing[1] * columns / 2, -pixel_spacing[0] * rows / 2, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = make_uid("FoR", study_uid, series_number)
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = z
    else:
        ds.FrameOfReferenceUID = make_uid("FoR", study_uid, series_uid)

    # ---- nested PHI: request attributes / referenced study ----------------------
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Mgmt
    ref_study.ReferencedSOPInstanceUID = study_uid
    ds.ReferencedStudySequence = Sequence([ref_study])
    req = Dataset()
    req.RequestedProcedureID = f"RP{accession[3:]}"
    req.ScheduledProcedureStepID = f"SPS{accession[3:]}"
    req.ScheduledProcedureStepDescription = study_desc
    req.RequestingPhysician = requesting
    req.AccessionNumber = accession
    req.StudyInstanceUID = study_uid
    req.ReasonForTheRequestedProcedure = f"Follow-up for {patient.display_name}"
    inner_ref = Dataset()
    inner_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    inner_ref.ReferencedSOPInstanceUID = study_uid
    req.ReferencedStudySequence = Sequence([inner_ref])
    ds.RequestAttributesSequence = Sequence([req])
    ds.RequestingPhysician = requesting

    # ---- private block ---------------------------------------------------------
    block = ds.private_block(0x0009, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", patient.name.replace("^", " "))
    block.add_new(0x11, "LO", patient.patient_id)
    block.add_new(0x12, "DA", patient.birth_date)
    block.add_new(0x13, "LO", f"{inst_name} / {station}")

    # ---- image pixel -------------------------------------------------------------
    nprng = np.random.default_rng((hash_str(f"{rng_seed}|{sop_uid}")) % (2**63))
    pixels = _phantom(rows, columns, modality, nprng, slice_pos=float(instance_number))
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = pixel_spacing
    if modality == "US":
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        # Ultrasound region calibration (minimal)
        region = Dataset()
        region.RegionSpatialFormat = 1
        region.RegionDataType = 1
        region.RegionFlags = 0
        region.RegionLocationMinX0 = 0
        region.RegionLocationMinY0 = 0
        region.RegionLocationMaxX1 = columns - 1
        region.RegionLocationMaxY1 = rows - 1
        region.PhysicalUnitsXDirection = 3
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = pixel_spacing[1] / 10.0
        region.PhysicalDeltaY = pixel_spacing[0] / 10.0
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.BurnedInAnnotation = "NO"
        if modality == "CT":
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
        elif modality == "MR":
            ds.WindowCenter = 600
            ds.WindowWidth = 1200
        else:
            ds.WindowCenter = 2048
            ds.WindowWidth = 4096
            ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = pixels.tobytes()

    # ---- overrides ------------------------------------------------------------------
    for key, value in overrides.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Serialise ``ds`` as Part 10 (128-byte preamble + ``DICM``)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Studies
# ---------------------------------------------------------------------------


def _study_date(seed: int, patient: FakePatient, study_index: int) -> str:
    rng = random.Random(f"date|{seed}|{patient.patient_id}|{study_index}")
    start = _dt.date(2015, 1, 1)
    end = _dt.date(2024, 12, 31)
    d = start + _dt.timedelta(days=rng.randrange((end - start).days + 1))
    bd = _dt.date(int(patient.birth_date[:4]), int(patient.birth_date[4:6]), int(patient.birth_date[6:8]))
    if d <= bd:
        d = bd + _dt.timedelta(days=1)
    return d.strftime("%Y%m%d")


def generate_study_files(
    *,
    patient: FakePatient,
    modality: str,
    n_series: int,
    n_instances: int,
    study_index: int,
    seed: int,
    rows: int = 64,
    columns: int = 64,
    **kw,
) -> list[tuple[str, bytes]]:
    """Generate one study as ``[(relative_name, part10_bytes), ...]``.

    Names look like ``"MRN482913/<StudyUID>/series1/IM0001.dcm"``.  Extra
    keyword arguments are passed through to :func:`make_instance` (e.g.
    ``body_part``, ``manufacturer``, ``model``, ``study_date`` or DICOM
    keyword overrides).
    """
    ent = [str(seed), patient.patient_id, str(study_index), modality]
    study_uid = make_uid("study", *ent)
    kw.setdefault("study_date", _study_date(seed, patient, study_index))
    files: list[tuple[str, bytes]] = []
    for s in range(1, n_series + 1):
        series_uid = make_uid("series", *ent, s)
        for i in range(1, n_instances + 1):
            sop_uid = make_uid("sop", *ent, s, i)
            ds = make_instance(
                patient=patient,
                modality=modality,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
                instance_number=i,
                series_number=s,
                rows=rows,
                columns=columns,
                rng_seed=seed,
                **kw,
            )
            files.append((f"{patient.patient_id}/{study_uid}/series{s}/IM{i:04d}.dcm", to_bytes(ds)))
    return files


# ---------------------------------------------------------------------------
# Demo datasets
# ---------------------------------------------------------------------------

DEMO_SPECS: list[dict] = [
    {
        "slug": "ct-chest-low-dose",
        "title": "Low-Dose Chest CT Screening Cohort",
        "description": (
            "Non-contrast low-dose chest CT studies from adult screening patients, "
            "acquired on Siemens and GE multi-detector scanners. Axial 1 mm "
            "reconstructions, soft-tissue kernel."
        ),
        "modality": "CT",
        "body_part": "CHEST",
        # Priced per study, with a volume discount for orders of 20 studies or more.
        "plan": {"pricing_model": "per_study", "price": "45.00", "currency": "USD", "volume_tiers": "20: 5"},
        # Every demo dataset holds more studies than the disclosure threshold (11), so its
        # counts show and it can be ordered, as a real dataset for sale would.
        "n_patients": 24,
        "studies_per_patient": 1,
        "n_series": 2,
        "n_instances": 4,
        "rows": 96,
        "columns": 96,
        "scanners": [("SIEMENS", "SOMATOM Force"), ("GE MEDICAL SYSTEMS", "Revolution CT")],
        "tags": ["lung", "screening", "thorax"],
        "licence_type": "commercial",
        "licence_terms": {"use": "commercial", "term_months": 24, "seats": 10, "derivative_models": True,
                          "publication": True, "territory": ["worldwide"], "access": "download"},
        "licence_text": "Commercial use, including training and validating models for commercial products. "
                        "Standard data use agreement applies.",
    },
    {
        "slug": "mr-brain-knee",
        "title": "Brain and Knee MRI (1.5T / 3T)",
        "description": (
            "T1-weighted spin-echo MRI of the brain and knee acquired on Philips "
            "Ingenia 1.5T and 3T systems. Mixed adult population."
        ),
        "modality": "MR",
        "body_part": "BRAIN",
        "body_parts": ["BRAIN", "KNEE"],
        # Priced per image, with a free sample and an academic discount.
        "plan": {"pricing_model": "per_image", "price": "1.50", "currency": "EUR", "sample_study_count": 2,
                 "academic_discount_bps": 2000},
        "n_patients": 24,  # 12 brain and 12 knee studies: each group can be counted and ordered
        "studies_per_patient": 1,
        "n_series": 2,
        "n_instances": 4,
        "rows": 96,
        "columns": 96,
        "scanners": [("Philips", "Ingenia 1.5T"), ("Philips", "Ingenia 3.0T")],
        "tags": ["neuro", "musculoskeletal"],
        "licence_type": "academic",
        "licence_terms": {"use": "research", "term_months": 12, "seats": 5, "derivative_models": True,
                          "publication": True, "territory": ["worldwide"], "access": "download"},
        "licence_text": "Non-commercial academic research only. Standard data use agreement applies.",
    },
    {
        "slug": "cr-chest-radiographs",
        "title": "Chest Radiographs (CR, PA view)",
        "description": (
            "Posteroanterior chest radiographs from computed radiography systems "
            "(Agfa and Carestream), suitable for classification pretraining."
        ),
        "modality": "CR",
        "body_part": "CHEST",
        # One price for the whole dataset.
        "plan": {"pricing_model": "flat", "price": "2500.00", "currency": "USD"},
        "n_patients": 20,
        "studies_per_patient": 2,
        "n_series": 1,
        "n_instances": 1,
        "rows": 128,
        "columns": 128,
        "scanners": [("Agfa", "CR 85-X"), ("Carestream Health", "DRX-Evolution")],
        "tags": ["chest x-ray", "classification"],
        "licence_type": "commercial",
        # Bought once for the whole dataset: a perpetual licence for the buyer organization.
        "licence_terms": {"use": "commercial", "term_months": None, "seats": None, "derivative_models": True,
                          "publication": True, "territory": ["worldwide"], "access": "download"},
        "licence_text": "Commercial use, including training and validating models for commercial products. "
                        "Standard data use agreement applies.",
    },
    {
        "slug": "us-abdomen",
        "title": "Abdominal Ultrasound Exams",
        "description": (
            "B-mode abdominal ultrasound exams (liver, gallbladder, kidneys) "
            "acquired on GE LOGIQ scanners."
        ),
        "modality": "US",
        "body_part": "ABDOMEN",
        # A yearly subscription: the dataset and the exams added to it during the year.
        "plan": {"pricing_model": "subscription", "price": "1200000", "currency": "JPY"},
        "n_patients": 16,
        "studies_per_patient": 1,
        "n_series": 1,
        "n_instances": 4,
        "rows": 96,
        "columns": 128,
        "scanners": [("GE Healthcare", "LOGIQ E10"), ("GE Healthcare", "LOGIQ E9")],
        "tags": ["abdomen", "liver", "kidney"],
        "licence_type": "academic",
        # The subscription's year; models trained on it are deleted when the year ends.
        "licence_terms": {"use": "research", "term_months": 12, "seats": 3, "derivative_models": False,
                          "publication": True, "territory": ["worldwide"], "access": "download"},
        "licence_text": "Non-commercial academic research only. Standard data use agreement applies.",
    },
]


def demo_instance_count(spec: dict) -> int:
    return (spec["n_patients"] * spec["studies_per_patient"]
            * spec["n_series"] * spec["n_instances"])


def generate_demo_dataset(spec: dict, *, seed: int) -> list[tuple[str, bytes]]:
    """All files for one demo dataset described by a :data:`DEMO_SPECS` entry."""
    modality = spec["modality"]
    # distinct patients per dataset even with the same seed
    pseed = seed * 1000 + (hash_str(spec.get("slug", spec["title"])) % 1000)
    patients = fake_patients(spec["n_patients"], seed=pseed)
    scanners = spec.get("scanners") or [_DEFAULT_SCANNER[modality]]
    body_parts = spec.get("body_parts") or [spec.get("body_part") or _DEFAULT_BODY_PART[modality]]
    files: list[tuple[str, bytes]] = []
    for p_idx, patient in enumerate(patients):
        for s_idx in range(spec["studies_per_patient"]):
            man, mod = scanners[(p_idx + s_idx) % len(scanners)]
            bp = body_parts[(p_idx + s_idx) % len(body_parts)]
            files.extend(
                generate_study_files(
                    patient=patient,
                    modality=modality,
                    n_series=spec["n_series"],
                    n_instances=spec["n_instances"],
                    study_index=s_idx,
                    seed=pseed,
                    rows=spec.get("rows", 64),
                    columns=spec.get("columns", 64),
                    body_part=bp,
                    manufacturer=man,
                    model=mod,
                )
            )
    return files


def write_zip(files: list[tuple[str, bytes]]) -> bytes:
    """Zip ``files`` (``[(name, bytes), ...]``) into an in-memory archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()
