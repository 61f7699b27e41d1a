"""Value rules shared by the two ways of applying the profile (engine.py on pydicom data
sets, fast.py on raw elements), so that both give the same output for the same input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydicom.multival import MultiValue

from deid import dates

if TYPE_CHECKING:
    from deid.clean import Scrubber

# Free-text VRs that Clean Descriptors scrubs (other VRs under C are dates or removed).
TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE", "PN"})
# Dummy values for action D, by VR.
DUMMY_VALUES: dict[str, Any] = {
    "PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "LT": "ANONYMIZED",
    "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "CS": "ANONYMIZED",
    "AE": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000", "TM": "000000",
    "AS": "000Y", "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0,
    "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0, "OB": b"\x00\x00", "OW": b"\x00\x00",
}
# Our implementation UID: 2.25 form of a fixed random UUID (not tied to any input).
IMPLEMENTATION_CLASS_UID = "2.25.302289163418620815962617346342312340418"
IMPLEMENTATION_VERSION = "MKTDEID_1"
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
PATIENT_AGE = 0x00101010


def values_of(value: Any) -> list[Any]:
    """A pydicom value as a list of its values (empty for None or "")."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def cap_age(value: Any) -> Any:
    """HIPAA Safe Harbor: ages over 89 are reported as 090Y."""
    text = str(value or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] == "Y" and int(text[:3]) > 89:
        return "090Y"
    return value


def patient_seed(patient_id: str, study_uid: str) -> str:
    """Stable per-patient seed; files without a PatientID fall back to their study."""
    patient_id = patient_id.strip()
    if patient_id:
        return "pid:" + patient_id
    return "study:" + study_uid.strip()


def shifted_dates(vr: str, values: list[Any], days: int) -> list[str] | None:
    """DA or DT values moved by ``days``; None when any cannot be parsed (the element is
    then removed: an unparseable date cannot be shifted safely)."""
    shift = dates.shift_da if vr == "DA" else dates.shift_dt
    shifted = [shift(str(v), days) for v in values]
    return None if any(s is None for s in shifted) else shifted  # type: ignore[return-value]


def cleaned_texts(scrubber: Scrubber, values: list[Any]) -> list[str]:
    """Free-text values with the file's identifying values scrubbed out (empty ones dropped)."""
    return [c for c in (scrubber.clean(str(v)) for v in values) if c]
