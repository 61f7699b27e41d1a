from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from deid_factory import KEY

from deid import Options, PHIRemainsError, deidentify_file
from deid.verify import collect_needles, verify_output


def _clean_output(src: Path) -> tuple[pydicom.Dataset, bytes]:
    out = io.BytesIO()
    deidentify_file(src, out, key=KEY, options=Options())
    return pydicom.dcmread(src), out.getvalue()


def _rewrite(data: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for name, value in changes.items():
        setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _with_private_bytes(data: bytes, value: bytes) -> bytes:
    """The output with ``value`` in a private OB element (searched as raw bytes)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.private_block(0x0031, "LEAKY", create=True).add_new(0x01, "OB", value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _verified_clean(make_file, **attrs: object) -> tuple[pydicom.Dataset, bytes]:
    """A file made with these attributes and its clean output, which the verifier passes."""
    original, data = _clean_output(make_file(**attrs))
    verify_output(original, data)
    return original, data


def _caught_in_comments(original: pydicom.Dataset, data: bytes, comment: str) -> None:
    with pytest.raises(PHIRemainsError, match=r"\(0020,4000\)"):
        verify_output(original, _rewrite(data, ImageComments=comment))


def test_it_passes_a_clean_output(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    verify_output(original, data)


def test_it_catches_a_name_planted_in_a_descriptor_and_names_only_the_tag(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    doctored = _rewrite(data, StudyDescription="follow-up for Jane Doe")
    with pytest.raises(PHIRemainsError) as err:
        verify_output(original, doctored)
    assert str(err.value) == "verification failed: identifying value remains in (0008,1030)"


def test_it_catches_an_id_in_a_private_block(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.private_block(0x0031, "LEAKY", create=True).add_new(0x01, "LO", "xMRN123456x")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(PHIRemainsError, match=r"\(0031,1001\)"):
        verify_output(original, buf.getvalue())


def test_it_catches_an_original_uid_in_a_nested_sequence(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = original.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(PHIRemainsError, match=r"\(0008,1155\)"):
        verify_output(original, buf.getvalue())


def test_it_catches_a_value_hidden_outside_any_element(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    doctored = b"MRN123456".ljust(128, b"\x00") + data[128:]  # in the preamble
    with pytest.raises(PHIRemainsError) as err:
        verify_output(original, doctored)
    assert "(0010,0020)" in str(err.value) and "MRN" not in str(err.value)


def test_it_catches_the_birth_date(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    with pytest.raises(PHIRemainsError, match=r"\(0020,4000\)"):
        verify_output(original, _rewrite(data, ImageComments="dob 1980-01-01"))


def test_short_values_match_only_as_whole_words(phi_file: Path) -> None:
    original, data = _clean_output(phi_file)
    # "DOE" as part of another word is no leak
    verify_output(original, _rewrite(data, ImageComments="DOES NOT APPLY"))
    with pytest.raises(PHIRemainsError):
        verify_output(original, _rewrite(data, ImageComments="doe"))


def test_vendor_named_institution_is_not_a_finding() -> None:
    ds = pydicom.Dataset()
    ds.InstitutionName = "TOSHIBA"
    ds.Manufacturer = "TOSHIBA_MEC"
    ds.PatientName = "DOE^JANE"
    sources = {n.source for n in collect_needles(ds)}
    assert 0x00080080 not in sources and 0x00100010 in sources


@pytest.mark.parametrize("written", ["(555) 867-5309", "555.867.5309", "555 867 5309",
                                     "555\t867\n5309", "tel 5558675309 x", "555/867-5309"])
def test_it_catches_a_phone_number_written_any_way(make_file, written: str) -> None:
    """The phone prefilter (digits present once separators are deleted) must let every
    separator the pattern allows through, in decoded text and in raw private bytes."""
    original, data = _verified_clean(make_file, PatientTelephoneNumbers="555-867-5309")
    _caught_in_comments(original, data, f"call {written} today")
    with pytest.raises(PHIRemainsError):
        verify_output(original, _with_private_bytes(data, f"x{written}x".encode()))


@pytest.mark.parametrize("patient_id, written", [
    ("123456789", "123-45-6789"), ("123456789", "123 456 789"), ("123456789", "(123) 456.789"),
    ("123-45-6789", "123456789"), ("ACC5533Q", "acc-5533q"), ("ACC5533Q", "ACC 5533 Q"),
])
def test_it_catches_an_id_written_with_other_separators(make_file, patient_id: str,
                                                        written: str) -> None:
    original, data = _verified_clean(make_file, PatientID=patient_id)
    _caught_in_comments(original, data, f"mrn {written} seen")
    with pytest.raises(PHIRemainsError):
        verify_output(original, _with_private_bytes(data, f"x {written} x".encode()))


@pytest.mark.parametrize("written", ["1234567890", "123-45-67890", "123-45-678", "ACC 5534Q",
                                     "ACC5533"])
def test_other_numbers_and_ids_are_not_taken_for_an_id(make_file, written: str) -> None:
    # Longer digit runs and other ids hold the characters but are not the id.
    src = make_file(PatientID="123456789" if written[0].isdigit() else "ACC5533Q")
    original, data = _clean_output(src)
    verify_output(original, _rewrite(data, ImageComments=f"ref {written} seen"))


@pytest.mark.parametrize("name, written", [
    ("MÜLLER^JÖRG", "Muller"), ("MÜLLER^JÖRG", "MUELLER"), ("MÜLLER^JÖRG", "joerg"),
    ("WAŁĘSA^ŁUKASZ", "Walesa"), ("WAŁĘSA^ŁUKASZ", "Lukasz"), ("KIERKEGÅRD^SØREN", "Kierkegaard"),
    ("KIERKEGÅRD^SØREN", "Soren"), ("MULLER^JORG", "Müller"), ("MULLER^JORG", "Jörg"),
])
def test_it_catches_a_name_written_with_or_without_its_marks(make_file, name: str,
                                                             written: str) -> None:
    original, data = _verified_clean(make_file, PatientName=name, SpecificCharacterSet="ISO_IR 192")
    _caught_in_comments(original, data, f"seen {written} today")


@pytest.mark.parametrize("written", ["Mulligan", "Jorgensen", "Wales", "Mulle"])
def test_short_names_without_marks_still_match_as_whole_words_only(make_file, written: str) -> None:
    src = make_file(PatientName="MÜLLER^JÖRG", SpecificCharacterSet="ISO_IR 192")
    original, data = _clean_output(src)
    verify_output(original, _rewrite(data, ImageComments=f"seen {written} today"))


@pytest.mark.parametrize("name, written", [
    ("MÜLLER^JÖRG", "DrMuller"), ("QUIMBY^ZEBULON", "foLOquimby"), ("QUIMBY^ZEBULON", "QuimbyMR"),
    ("QUIMBY¡ZEBULON", "Zebulon"), ("山田^太郎©やまだ", "太郎"),
])
def test_long_names_glued_to_other_letters_and_damaged_separators_are_caught(
        make_file, name: str, written: str) -> None:
    """Found by fuzzing: a 6+ letter name glued to other letters passed as no whole
    word, and a name whose "^" or "=" was damaged was read as one word."""
    original, data = _verified_clean(make_file, PatientName=name, SpecificCharacterSet="ISO_IR 192")
    _caught_in_comments(original, data, f"seen {written} today")


@pytest.mark.parametrize("name, written", [
    ("O'BRIEN^SEAN", "OBrien"), ("SMYTHE-JONES^ANN", "smythejones"),
    ("VAN DER BERG^JAN", "Vanderberg"), ("DOE^JANE", "JANEDOE"), ("DOE^JANE", "DoeJane"),
])
def test_it_catches_a_name_run_together(make_file, name: str, written: str) -> None:
    original, data = _verified_clean(make_file, PatientName=name)
    _caught_in_comments(original, data, f"seen {written} today")


def test_a_research_label_as_patient_name_is_not_taken_apart_at_underscores(make_file) -> None:
    # TCIA-style labels (pydicom's explicit_VR-UN.dcm: PatientName PANCREAS_0001 and
    # BodyPartExamined PANCREAS): the body part is no leak of the label.
    _, data = _verified_clean(make_file, PatientName="PANCREAS_0001", BodyPartExamined="PANCREAS")
    assert pydicom.dcmread(io.BytesIO(data)).BodyPartExamined == "PANCREAS"
