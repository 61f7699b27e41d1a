"""Planted-PHI corpus: files with fake patient data hidden where de-identifiers miss it.

Every case is one small Part 10 file built here (nothing from the internet, no real
patient). Each plants identifying values of the file's own patient (name, MRN, accession,
birth date, address, physician...) into one hiding place, so a correct engine can know
them and must remove them. ``CASES`` maps a case name to a builder returning a ``Case``.

    for case in all_cases():
        case.data      # bytes of the input file
        case.needles   # strings that must not appear in the output, in any encoding
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

FAMILY, GIVEN = "QUIMBY", "ZEBULON"
NAME = f"{FAMILY}^{GIVEN}"
MRN = "MRN4711XY"
OLD_MRN = "OLDMRN8842"
ACCESSION = "ACC5533Q"
BIRTH = "19631107"
BIRTH_ISO = "1963-11-07"
INSTITUTION = "GRIMSBY GENERAL INFIRMARY"
ADDRESS = "42 Wallaby Way, Sydney"
PHONE = "555-0199-77"
PHYSICIAN = "KROPOTKIN^PETRA"
MOTHER = "QUIMBY^ROSALIND"
RESPONSIBLE = "FAIRWEATHER^HORATIO"
OTHER_NAME = "QUIMBY-SMYTHE^ZEB"
STUDY_UID = "1.2.826.0.1.3680043.8.498.77001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.77002"
SOP_UID = "1.2.826.0.1.3680043.8.498.77003"
FOR_UID = "1.2.826.0.1.3680043.8.498.77004"
REF_UID = "1.2.826.0.1.3680043.8.498.77005"

# Tokens of the base patient; every case checks these, plus its own extras.
BASE_NEEDLES = [FAMILY, GIVEN, MRN, ACCESSION, BIRTH, BIRTH_ISO, "GRIMSBY", "Wallaby",
                PHONE, "KROPOTKIN", "PETRA", STUDY_UID, SERIES_UID, SOP_UID, FOR_UID]


@dataclass
class Case:
    name: str
    data: bytes
    needles: list[str]
    # Places (tag or "preamble"/"meta") where the value was planted: documentation.
    where: str = ""
    # Output checks beyond "no needle anywhere": keyword -> expected value (None: absent).
    expect: dict[str, object] = field(default_factory=dict)


def base_dataset(**overrides: object) -> Dataset:
    """A CT instance of the fake patient with the usual identifying attributes."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = FOR_UID
    ds.StudyDate = "20210304"
    ds.SeriesDate = "20210304"
    ds.StudyTime = "093000"
    ds.AccessionNumber = ACCESSION
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "SCAN 3000"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = ADDRESS
    ds.ReferringPhysicianName = PHYSICIAN
    ds.ReferringPhysicianTelephoneNumbers = PHONE
    ds.PatientName = NAME
    ds.PatientID = MRN
    ds.PatientBirthDate = BIRTH
    ds.PatientSex = "M"
    ds.PatientAge = "057Y"
    ds.StudyID = "STU99812"
    ds.SeriesNumber = "2"
    ds.InstanceNumber = "1"
    ds.Rows = 4
    ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(16, dtype="<u2").tobytes()
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, *,
             preamble: bytes = b"\x00" * 128, meta: dict[str, object] | None = None) -> bytes:
    ts = UID(transfer_syntax)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = ts
    for keyword, value in (meta or {}).items():
        setattr(fm, keyword, value)
    ds.file_meta = fm
    ds.preamble = preamble
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=ts.is_implicit_VR,
             little_endian=ts.is_little_endian)
    return buffer.getvalue()


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _text(keyword: str, value: str) -> Callable[[], Case]:
    def build() -> Case:
        return Case(f"text-{keyword}", to_bytes(base_dataset(**{keyword: value})),
                    list(BASE_NEEDLES), keyword)
    return build


_TEXT_PLANTS = {
    "StudyDescription": f"CT CHEST for {FAMILY} {GIVEN} {MRN}",
    "SeriesDescription": f"{GIVEN} {FAMILY} follow-up",
    "ProtocolName": f"{NAME} protocol",
    "ImageComments": f"pt {MRN.lower()}, dob {BIRTH_ISO}, acc {ACCESSION}",
    "AdditionalPatientHistory": "Referred by Dr Kropotkin, Petra",
    "PatientComments": f"lives at {ADDRESS}",
    "RequestedProcedureDescription": f"{ACCESSION} chest",
    "ReasonForStudy": f"{FAMILY}, {GIVEN}: cough",
    "PerformedProcedureStepDescription": f"for {FAMILY.lower()} ({GIVEN.title()})",
    "AcquisitionComments": f"call {PHONE}",
    "DerivationDescription": f"derived from {MRN} study {STUDY_UID}",
    "OtherPatientNames": OTHER_NAME,
    "PatientMotherBirthName": MOTHER,
    "ResponsiblePerson": RESPONSIBLE,
    "OtherPatientIDs": OLD_MRN,
    "InstitutionAddress": ADDRESS,
    "DeviceSerialNumber": MRN,  # device identity is off by default
    "StationName": f"{FAMILY}-WS",
}


def case_sr() -> Case:
    ds = base_dataset(SOPClassUID=BasicTextSRStorage, Modality="SR", PixelData=None,
                      Rows=None, Columns=None, SamplesPerPixel=None,
                      PhotometricInterpretation=None, BitsAllocated=None, BitsStored=None,
                      HighBit=None, PixelRepresentation=None)
    ds.ValueType = "CONTAINER"
    text = _item(RelationshipType="CONTAINS", ValueType="TEXT",
                 TextValue=f"Patient {GIVEN} {FAMILY}, MRN {MRN}, seen 2021-03-04")
    person = _item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME", PersonName=PHYSICIAN)
    image = _item(RelationshipType="CONTAINS", ValueType="IMAGE",
                  ReferencedSOPSequence=Sequence([_item(ReferencedSOPClassUID=CTImageStorage,
                                                        ReferencedSOPInstanceUID=REF_UID)]))
    ds.ContentSequence = Sequence([text, person, image])
    return Case("sr-content", to_bytes(ds), BASE_NEEDLES + [REF_UID], "ContentSequence")


def _charset_case(name: str, charset: str | None, person: str, needles: list[str],
                  description: str) -> Case:
    ds = base_dataset(PatientName=person, StudyDescription=description)
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    return Case(name, to_bytes(ds), BASE_NEEDLES[2:] + needles, "PatientName")


def case_latin1() -> Case:
    return _charset_case("charset-latin1", "ISO_IR 100", "MÜLLER^JÖRG", ["MÜLLER", "JÖRG"],
                         "Kontrolle Jörg Müller")


def case_utf8() -> Case:
    return _charset_case("charset-utf8", "ISO_IR 192", "ŁUKASIEWICZ^ŻANETA",
                         ["ŁUKASIEWICZ", "ŻANETA"], "kontrola Żaneta Łukasiewicz")


def case_japanese() -> Case:
    ds = base_dataset(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
                      StudyDescription="CT 山田 太郎")
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    return Case("charset-iso2022-ir87", to_bytes(ds),
                BASE_NEEDLES[2:] + ["Yamada", "Tarou", "山田", "太郎", "やまだ", "たろう"],
                "PatientName")


def case_wrong_charset() -> Case:
    """Declares UTF-8 but the bytes are Latin-1 (a common PACS export bug)."""
    ds = base_dataset(PatientName="MÜLLER^JÖRG", StudyDescription="Jörg Müller knee")
    data = to_bytes(ds)  # written as ISO_IR 100
    at = data.index(b"ISO_IR 100")
    data = data[:at] + b"ISO_IR 192" + data[at + 10:]
    return Case("charset-wrong", data, BASE_NEEDLES[2:] + ["MÜLLER", "JÖRG"], "PatientName")


def case_missing_charset() -> Case:
    ds = base_dataset(PatientName="MÜLLER^JÖRG", StudyDescription="Jörg Müller knee")
    del ds.SpecificCharacterSet
    ds.PatientName = "MÜLLER^JÖRG".encode("latin-1")
    ds.StudyDescription = "Jörg Müller knee".encode("latin-1")
    return Case("charset-missing", to_bytes(ds), BASE_NEEDLES[2:] + ["MÜLLER", "JÖRG"],
                "PatientName")


def case_names_without_marks() -> Case:
    """The patient's name in free text without its marks, or spelled out in ASCII."""
    ds = base_dataset(PatientName="MÜLLER^JÖRG=WAŁĘSA", StudyDescription="knee Jorg Muller",
                      SeriesDescription="Mueller Joerg, Walesa", ProtocolName="MULLER-JORG")
    ds.SpecificCharacterSet = "ISO_IR 192"
    return Case("names-without-marks", to_bytes(ds),
                BASE_NEEDLES[2:] + ["Muller", "Jorg", "Mueller", "Joerg", "Walesa"],
                "StudyDescription")


def case_names_with_marks() -> Case:
    """The file spells the name in ASCII, the free text with its marks."""
    ds = base_dataset(PatientName="MULLER^JORG", StudyDescription="Kontrolle Jörg Müller",
                      SeriesDescription="MÜLLER knee")
    ds.SpecificCharacterSet = "ISO_IR 100"
    return Case("names-with-marks", to_bytes(ds), BASE_NEEDLES[2:] + ["Müller", "Jörg"],
                "StudyDescription")


def case_names_run_together() -> Case:
    """Name parts written without their apostrophe, hyphen or spaces, or run together."""
    ds = base_dataset(PatientName="O'BRIEN-VAN DER BERG^SEAN", StudyDescription="CT OBrien knee",
                      SeriesDescription="obrienvanderberg", ProtocolName="Van-Der-Berg OBrien")
    return Case("names-run-together", to_bytes(ds),
                BASE_NEEDLES[2:] + ["OBrien", "obrienvanderberg"], "StudyDescription")


def case_dates() -> Case:
    ds = base_dataset(AcquisitionDateTime=BIRTH + "120000.000000",
                      ImageComments="seen on 2021-03-04, born 07/11/1963, 4 March 2021",
                      StudyDescription="CT 04.03.2021 follow up of Nov 7, 1963")
    ds.AcquisitionDate = "20210304"
    ds.AcquisitionTime = "120000"
    ds.ContentDate = "20210304"
    return Case("dates-free-text", to_bytes(ds),
                BASE_NEEDLES + ["2021-03-04", "20210304", "07/11/1963", "04.03.2021",
                                "4 March 2021", "Nov 7, 1963"], "ImageComments")


def case_ids_spelled_otherwise() -> Case:
    """The MRN and accession number in free text with separators the file's values lack."""
    ds = base_dataset(StudyDescription="CT CHEST mrn-4711-xy", ImageComments="acc ACC 5533 Q ok",
                      SeriesDescription="ref (mrn) 4711.XY")
    return Case("ids-spelled-otherwise", to_bytes(ds),
                BASE_NEEDLES + ["mrn-4711-xy", "ACC 5533 Q", "4711.XY"], "StudyDescription")


def case_mrn_in_uid() -> Case:
    pid = "88442211"
    study = f"1.2.826.0.1.{pid}.1"
    ds = base_dataset(PatientID=pid, StudyInstanceUID=study,
                      ImageComments=f"ref uid {study}; mrn {pid}",
                      StudyDescription=f"CT 1.2.840.{pid}")
    return Case("mrn-in-uid", to_bytes(ds), BASE_NEEDLES[:2] + [pid, study], "StudyInstanceUID")


def case_private() -> Case:
    ds = base_dataset()
    block = ds.private_block(0x0029, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", f"{NAME} {MRN}")
    block.add_new(0x02, "OB", f"{MRN} {FAMILY}".encode())
    safe = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    safe.add_new(0x0C, "IS", "1000")
    # A private element whose creator is missing.
    ds.add_new(0x00311010, "LO", f"{MRN} {FAMILY}")
    ds.add_new(0x00331001, "UN", f"{NAME}".encode())
    return Case("private-blocks", to_bytes(ds), list(BASE_NEEDLES), "(0029,1001)")


def safe_private_dataset(with_sequence: bool = True) -> Dataset:
    """Safe private attributes (Table E.3.10-1) of each kind: a number, a coded text, a
    UID naming the file's own series, a sequence whose item holds PHI; a listed element
    with another VR than the table's, and an unlisted one."""
    ds = base_dataset()
    philips = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    philips.add_new(0x03, "FL", 1000.0)  # Diffusion B-Factor
    philips.add_new(0x50, "LO", "ARROW")  # Graphic Marker Type
    mask = Dataset()
    mask.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    mask.ReferencedSOPInstanceUID = REF_UID
    mask.PatientName = NAME
    mask.private_block(0x0029, "ACME PRIVATE", create=True).add_new(0x01, "LO", MRN)
    if with_sequence:  # (the fast path leaves files with one to pydicom)
        philips.add_new(0x73, "SQ", Sequence([mask]))  # Referenced Mask Image Sequence
    philips.add_new(0x01, "LO", f"{NAME} {MRN}")  # listed as FL: not the listed attribute
    philips.add_new(0x0D, "LO", MRN)  # not on the list
    ds.private_block(0x0099, "NQHeader", create=True).add_new(0x02, "UI", SERIES_UID)
    return ds


def case_safe_private_kinds() -> Case:
    return Case("safe-private-kinds", to_bytes(safe_private_dataset()),
                BASE_NEEDLES + [REF_UID], "(2001,1073)")


def case_safe_private_flat() -> Case:
    return Case("safe-private-flat", to_bytes(safe_private_dataset(with_sequence=False)),
                list(BASE_NEEDLES), "(2001,1001)")


def case_private_implicit() -> Case:
    ds = base_dataset()
    ds.private_block(0x0029, "ACME PRIVATE", create=True).add_new(0x01, "LO", f"{NAME} {MRN}")
    ds.add_new(0x00311010, "LO", f"{MRN} {FAMILY}")
    return Case("private-implicit", to_bytes(ds, ImplicitVRLittleEndian), list(BASE_NEEDLES),
                "(0029,1001)")


def case_overlay_curve() -> Case:
    ds = base_dataset()
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000022, "LO", f"{FAMILY} overlay")  # Overlay Description
    ds.add_new(0x60001500, "LO", f"{MRN}")  # Overlay Label
    ds.add_new(0x60004000, "LT", f"{GIVEN} comment")  # Overlay Comments (retired)
    ds.add_new(0x60003000, "OW", b"\x00" * 2)
    ds.add_new(0x50002500, "LO", f"{FAMILY} curve")  # Curve Label
    ds.add_new(0x50003000, "OW", f"{MRN}.".encode())  # Curve Data
    return Case("overlay-curve", to_bytes(ds), list(BASE_NEEDLES), "(6000,0022)")


def case_deep_request() -> Case:
    ds = base_dataset()
    request = _item(RequestingPhysician=PHYSICIAN, RequestedProcedureID=ACCESSION,
                    ReasonForTheRequestedProcedure=f"{FAMILY} pain",
                    ScheduledProcedureStepDescription=f"{GIVEN} CT")
    source = _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=REF_UID,
                   RequestAttributesSequence=Sequence([request]))
    ref = _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=REF_UID,
                SourceImageSequence=Sequence([source]))
    ds.ReferencedImageSequence = Sequence([ref])
    ds.RequestAttributesSequence = Sequence([_item(RequestingPhysician=PHYSICIAN,
                                                   RequestedProcedureDescription=f"{MRN} CT")])
    return Case("request-depth-3", to_bytes(ds), BASE_NEEDLES + [REF_UID],
                "RequestAttributesSequence")


def case_referenced_patient() -> Case:
    ds = base_dataset()
    ds.ReferencedPatientSequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1",
        ReferencedSOPInstanceUID=REF_UID, PatientName=NAME, PatientID=MRN)])
    return Case("referenced-patient", to_bytes(ds), BASE_NEEDLES + [REF_UID],
                "ReferencedPatientSequence")


def case_original_attributes() -> Case:
    ds = base_dataset()
    modified = _item(PatientName=NAME, PatientID=MRN, PatientBirthDate=BIRTH,
                     AccessionNumber=ACCESSION, StudyInstanceUID=STUDY_UID)
    ds.OriginalAttributesSequence = Sequence([_item(
        ModifiedAttributesSequence=Sequence([modified]),
        AttributeModificationDateTime="20210305101010",
        ModifyingSystem="PACS", SourceOfPreviousValues=INSTITUTION,
        ReasonForTheAttributeModification="CORRECT")])
    return Case("original-attributes", to_bytes(ds), list(BASE_NEEDLES),
                "OriginalAttributesSequence")


def case_other_ids() -> Case:
    ds = base_dataset(OtherPatientIDs=[OLD_MRN, "XREF77123"])
    ds.OtherPatientIDsSequence = Sequence([
        _item(PatientID=OLD_MRN, IssuerOfPatientID="GRIMSBY", TypeOfPatientID="TEXT"),
        _item(PatientID="XREF77123", IssuerOfPatientID="REGION"),
    ])
    return Case("other-patient-ids", to_bytes(ds), BASE_NEEDLES + [OLD_MRN, "XREF77123"],
                "OtherPatientIDsSequence")


def case_ethnic_group() -> Case:
    """A patient characteristic, kept with the option: not a leak."""
    ds = base_dataset(EthnicGroup="MAORI", PatientSize="1.80", PatientWeight="80")
    return Case("ethnic-group-kept", to_bytes(ds), list(BASE_NEEDLES), "EthnicGroup",
                expect={"EthnicGroup": "MAORI", "PatientWeight": "80"})


def _occupation(occupation: str) -> Callable[[], Case]:
    """A rare occupation identifies on its own: removed whatever the options."""
    def build() -> Case:
        ds = base_dataset(Occupation=occupation)
        return Case(f"occupation-{occupation.lower()}", to_bytes(ds),
                    BASE_NEEDLES + [occupation], "Occupation", expect={"Occupation": None})
    return build


def case_cjk_name_romanised_comment() -> Case:
    """The name only in kanji, the comment in romaji: the verifier cannot know that
    "Yamada Taro" is the patient, so patient free text must not come through."""
    ds = base_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="山田^太郎",
                      PatientComments="Yamada Taro, follow-up in 6 months",
                      AdditionalPatientHistory="Yamada-san: asthma since 2001")
    return Case("cjk-name-romanised-comment", to_bytes(ds),
                BASE_NEEDLES[2:] + ["山田", "太郎", "Yamada", "Taro"], "PatientComments",
                expect={"PatientComments": None, "AdditionalPatientHistory": None})


def case_patient_free_text() -> Case:
    """Every free-text attribute about the patient, each with a clue the verifier cannot
    tie to the patient: none survives the default options."""
    ds = base_dataset(
        PatientComments="Lives alone above the lighthouse, Ardnamurchan Point",
        AdditionalPatientHistory="Former falconer at Balmoral estate",
        MedicalAlerts="Pacemaker fitted at Ardnamurchan cottage hospital",
        Allergies="Penicillin (reaction at Ardnamurchan ferry, 1999)",
        PatientState="Sedated: only child of the Ardnamurchan laird",
        SpecialNeeds="Interpreter: Ardnamurchan Gaelic",
        PreMedication="Lorazepam given by wife Morag",
        ReasonForVisit="Fall from the Ardnamurchan lighthouse stair",
        VisitComments="Brought in by Morag",
        PatientReligiousPreference="Ardnamurchan Free Kirk",
        MilitaryRank="Wing Commander", BranchOfService="Royal Ardnamurchan Yeomanry",
        PatientAddress=ADDRESS, PatientTelephoneNumbers=PHONE,
        PatientMotherBirthName=MOTHER,
    )
    return Case("patient-free-text", to_bytes(ds),
                BASE_NEEDLES + ["Ardnamurchan", "Morag", "falconer", "Wing Commander",
                                "ROSALIND"], "PatientComments",
                expect={"PatientComments": None, "AdditionalPatientHistory": None,
                        "MedicalAlerts": None, "Allergies": None, "PatientState": None,
                        "SpecialNeeds": None, "PreMedication": None, "ReasonForVisit": None,
                        "VisitComments": None, "MilitaryRank": None,
                        "PatientSex": "M", "PatientAge": "057Y"})


def case_file_meta() -> Case:
    ds = base_dataset()
    data = to_bytes(ds, meta={
        "SourceApplicationEntityTitle": FAMILY,
        "PrivateInformationCreatorUID": "1.2.826.0.1.3680043.8.498.4711",
        "PrivateInformation": f"{NAME} {MRN}".encode(),
        "SendingApplicationEntityTitle": MRN[:16],
    })
    return Case("file-meta", data, list(BASE_NEEDLES), "(0002,0016)")


def case_preamble() -> Case:
    preamble = f"{NAME} {MRN} {ACCESSION}".encode().ljust(128, b"\x00")
    return Case("preamble", to_bytes(base_dataset(), preamble=preamble), list(BASE_NEEDLES),
                "preamble")


def case_trailing_padding() -> Case:
    ds = base_dataset()
    ds.add_new(0xFFFCFFFC, "OB", f"{NAME} {MRN}".encode() + b"\x00" * 6)
    return Case("trailing-padding", to_bytes(ds), list(BASE_NEEDLES), "(FFFC,FFFC)")


def case_unknown_public() -> Case:
    ds = base_dataset()
    ds.add_new(0x00401001, "SH", ACCESSION[:16])  # RequestedProcedureID (in the table)
    ds.add_new(0x00101050, "LO", f"INS {MRN}")  # InsurancePlanIdentification (retired)
    ds.add_new(0x00189999, "LO", f"{FAMILY} {MRN}")  # not in any dictionary
    ds.add_new(0x00771234, "UT", f"{NAME}")  # unknown even group
    return Case("unknown-public", to_bytes(ds), list(BASE_NEEDLES), "(0018,9999)")


def case_big_endian_sequences() -> Case:
    ds = base_dataset()
    ds.ReferencedPatientSequence = Sequence([_item(PatientName=NAME, PatientID=MRN)])
    ds.RequestAttributesSequence = Sequence([_item(RequestingPhysician=PHYSICIAN)])
    return Case("big-endian-sequences", to_bytes(ds, ExplicitVRBigEndian), list(BASE_NEEDLES),
                "ReferencedPatientSequence")


def case_everything() -> Case:
    """All text plants at once, plus a private block and nested leaks."""
    ds = base_dataset(**{k: v for k, v in _TEXT_PLANTS.items()})
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID=OLD_MRN)])
    ds.ReferencedPatientSequence = Sequence([_item(PatientName=NAME)])
    ds.private_block(0x0029, "ACME PRIVATE", create=True).add_new(0x01, "LO", NAME)
    ds.add_new(0x60000022, "LO", FAMILY)
    return Case("everything", to_bytes(ds), BASE_NEEDLES + [OLD_MRN, "ROSALIND", "FAIRWEATHER",
                                                            "HORATIO"], "many")


CASES: dict[str, Callable[[], Case]] = {f"text-{k}": _text(k, v) for k, v in _TEXT_PLANTS.items()}
CASES.update({
    "sr-content": case_sr,
    "charset-latin1": case_latin1,
    "charset-utf8": case_utf8,
    "charset-iso2022-ir87": case_japanese,
    "charset-wrong": case_wrong_charset,
    "charset-missing": case_missing_charset,
    "names-without-marks": case_names_without_marks,
    "names-with-marks": case_names_with_marks,
    "names-run-together": case_names_run_together,
    "dates-free-text": case_dates,
    "ids-spelled-otherwise": case_ids_spelled_otherwise,
    "mrn-in-uid": case_mrn_in_uid,
    "private-blocks": case_private,
    "private-implicit": case_private_implicit,
    "safe-private-kinds": case_safe_private_kinds,
    "safe-private-flat": case_safe_private_flat,
    "overlay-curve": case_overlay_curve,
    "request-depth-3": case_deep_request,
    "referenced-patient": case_referenced_patient,
    "original-attributes": case_original_attributes,
    "other-patient-ids": case_other_ids,
    "ethnic-group-kept": case_ethnic_group,
    "occupation-lighthousekeeper": _occupation("Lighthousekeeper"),
    "occupation-taxidermist": _occupation("Taxidermist"),
    "occupation-falconer": _occupation("Falconer"),
    "cjk-name-romanised-comment": case_cjk_name_romanised_comment,
    "patient-free-text": case_patient_free_text,
    "file-meta": case_file_meta,
    "preamble": case_preamble,
    "trailing-padding": case_trailing_padding,
    "unknown-public": case_unknown_public,
    "big-endian-sequences": case_big_endian_sequences,
    "everything": case_everything,
})


def all_cases() -> list[Case]:
    return [build() for build in CASES.values()]


ENCODINGS = ("ascii", "latin-1", "utf-8", "cp1252", "iso2022_jp", "shift_jis", "euc_jp",
             "utf-16-le", "utf-16-be")


def encoded_forms(value: str) -> set[bytes]:
    """The byte forms a value can take in a DICOM file (case variants included)."""
    forms: set[bytes] = set()
    for variant in {value, value.upper(), value.lower(), value.title()}:
        for encoding in ENCODINGS:
            try:
                raw = variant.encode(encoding)
            except UnicodeError:
                continue
            if encoding == "iso2022_jp" and raw.startswith(b"\x1b$B"):
                raw = raw[3:].removesuffix(b"\x1b(B")  # the JIS X 0208 bytes themselves
            if len(raw) >= 3:
                forms.add(raw)
    return forms


def find_leaks(data: bytes, needles: list[str]) -> list[str]:
    """Needles found anywhere in ``data`` (case-insensitive for ASCII). Test-side oracle."""
    lowered = data.lower()
    found = []
    for needle in needles:
        if any(form in data or form.lower() in lowered for form in encoded_forms(needle)):
            found.append(needle)
    return found


def raw_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (for hand-built hostile files)."""
    group, element = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV",
              b"SV", b"UV"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value
