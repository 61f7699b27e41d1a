"""PS3.15 Annex E profile as data: options, Table E.1-1 rows and how actions resolve.

The rules live in deid/data/*.json; this module only loads them and decides, for one
tag and one set of options, which single action code applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

# Single action codes the engine applies.
REMOVE = "X"
ZERO = "Z"
DUMMY = "D"
KEEP = "K"
CLEAN = "C"
UID = "U"
# Not a code of the table: a patient free-text attribute the provider opted in to keep
# (Options.accept_patient_free_text_risk). Cleaned as C, and kept only where the file's
# person names can be verified (deid/decide.py, values.patient_text_verifiable).
CLEAN_PATIENT_TEXT = "CP"

# data/decisions.json: how a row's actions are read.
TABLE, BASIC, PATIENT_FREE_TEXT = "table", "basic", "patient_free_text"
DECISIONS = frozenset({TABLE, BASIC, PATIENT_FREE_TEXT})

# Strictest sensible reading of the combined codes of Table E.1-1. "X/..." means "remove
# unless the IOD needs it": we always remove, since a buyer-facing copy need not be
# IOD-conformant for Type 1/2 identifying attributes and removal leaks nothing. "Z/D"
# becomes Z: an empty value tells less than an invented one. "X/Z/U*" (reference
# sequences) becomes U: the sequence is kept, every item goes through the same table
# recursively (so its UIDs are remapped and anything else identifying is removed), which
# keeps the references between de-identified instances intact.
COMBINED: dict[str, str] = {
    "X": REMOVE,
    "Z": ZERO,
    "D": DUMMY,
    "U": UID,
    "K": KEEP,
    "C": CLEAN,
    "X/Z": REMOVE,
    "X/D": REMOVE,
    "X/Z/D": REMOVE,
    "Z/D": ZERO,
    "X/Z/U*": UID,
}


@dataclass(frozen=True)
class Options:
    """PS3.15 Annex E options. Defaults suit a research-data marketplace."""

    retain_patient_characteristics: bool = True
    retain_longitudinal_modified_dates: bool = True
    retain_device_identity: bool = False  # station names and serials point at a site
    clean_descriptors: bool = True
    retain_safe_private: bool = False
    # Clean Pixel Data Option: mask burned-in text with the device's rule (deid/pixels.py).
    clean_pixel_data: bool = True
    accept_burned_in_risk: bool = False
    # Patient free text (PatientComments, AdditionalPatientHistory, ...: the rows of
    # data/decisions.json decided "patient_free_text") is removed. A provider may keep
    # some, knowingly: the keywords named here are kept CLEANED (with Clean Descriptors
    # on; removed otherwise) in files whose person names are all in Latin script; the
    # verifier checks them like every value, but cannot know every name a text may hold.
    # Accepts an iterable of keywords, a comma-separated string, True (all of them) or
    # False/None (none); stored as a frozenset of keywords.
    accept_patient_free_text_risk: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "accept_patient_free_text_risk",
                           _patient_free_text(self.accept_patient_free_text_risk))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_flags(cls, flags: list[str]) -> Options:
        """Build from CLI-style flags: "name", "name=true", "name=false"."""
        values: dict[str, Any] = {}
        for flag in flags:
            name, _, raw = flag.partition("=")
            name = name.strip().replace("-", "_")
            if name not in cls.names():
                raise ValueError(f"unknown option: {name}")
            if name == "accept_patient_free_text_risk" and raw.strip().lower() not in (
                    "", "true", "false", "1", "0", "yes", "no"):
                values[name] = raw  # keywords, comma-separated
                continue
            raw = raw.strip().lower() or "true"
            if raw not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"option {name} needs true or false")
            values[name] = raw in ("true", "1", "yes")
        return cls(**values)


def _patient_free_text(value: object) -> frozenset[str]:
    """Options.accept_patient_free_text_risk as a frozenset of known keywords."""
    allowed = load_profile().patient_free_text
    if value is None or value is False:
        return frozenset()
    if value is True:
        return allowed
    if isinstance(value, str):
        value = [part for part in value.replace(" ", ",").split(",") if part]
    if not isinstance(value, Iterable):
        raise ValueError("accept_patient_free_text_risk: keywords, True or False")
    keywords = frozenset(str(v).strip() for v in value)
    unknown = sorted(keywords - allowed)
    if unknown:  # attribute keywords only: no value of any file
        raise ValueError("accept_patient_free_text_risk: not a patient free-text attribute: "
                         + ", ".join(unknown) + " (one of: " + ", ".join(sorted(allowed)) + ")")
    return keywords


# Table column -> the Options field that switches it on. Columns with no field here
# (retain UIDs, full dates, institution identity, clean structured content / graphics)
# are options we do not offer.
OPTION_COLUMNS: dict[str, str] = {
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "rtnDevIdOpt": "retain_device_identity",
    "cleanDescOpt": "clean_descriptors",
}

# Option field -> (DCM code value, code meaning) for DeidentificationMethodCodeSequence.
OPTION_CODES: dict[str, tuple[str, str]] = {
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    # Listed only for files whose pixels were actually masked (see engine._attest).
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
}
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")


def _load(name: str) -> dict[str, Any]:
    text = resources.files("deid").joinpath("data", name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True)
class Rule:
    tag: int
    keyword: str
    basic: str
    options: tuple[tuple[str, str], ...]
    # data/decisions.json: how the row is read (TABLE when it has no entry there)
    decision: str = TABLE
    reason: str = ""


@dataclass(frozen=True)
class Profile:
    edition: str
    rules: dict[int, Rule]
    allowed: frozenset[int]
    # (group, creator lower-case, element offset) of safe private attributes -> their VR
    # in Table E.3.10-1 ("" where the table gives none)
    safe_private: Mapping[tuple[int, str, int], str]
    # keywords of the rows decided "patient_free_text"
    patient_free_text: frozenset[str] = frozenset()

    def action_for(self, tag: int, options: Options) -> str | None:
        """Single action code for a standard tag, or None when the table has no row."""
        rule = self.rules.get(tag)
        if rule is None:
            return None
        chosen = COMBINED[rule.basic]
        if rule.decision == BASIC:
            return chosen
        if rule.decision == PATIENT_FREE_TEXT:
            if options.clean_descriptors and rule.keyword in options.accept_patient_free_text_risk:
                return CLEAN_PATIENT_TEXT
            return chosen
        option_actions = {
            action
            for column, action in rule.options
            if column in OPTION_COLUMNS and getattr(options, OPTION_COLUMNS[column])
        }
        # When several active options disagree (Calibration Date: device K, dates C) the
        # stricter C wins, so dates are still shifted.
        if CLEAN in option_actions:
            return CLEAN
        if KEEP in option_actions:
            return KEEP
        return chosen


def safe_private_vr(vr: str, listed_vr: str) -> bool:
    """Whether an element of this VR is the safe private attribute the table lists with
    ``listed_vr`` ("OW/OB": either; "": the table gives none; UN never: its VR unknown)."""
    return vr != "UN" and (not listed_vr or vr in listed_vr.split("/"))


@lru_cache(maxsize=1)
def load_profile() -> Profile:
    table = _load("ps3.15-e1-1-2024.json")
    decided = {int(row["tag"], 16): row for row in _load("decisions.json")["rows"]}
    rules: dict[int, Rule] = {}
    for row in table["rows"]:
        if not row["keyword"]:
            continue  # repeating groups / private rows are handled structurally
        tag = int(row["tag"], 16)
        ours = decided.pop(tag, None) or {"decision": TABLE, "reason": ""}
        if ours["decision"] not in DECISIONS or ours.get("keyword", row["keyword"]) != row["keyword"]:
            raise ValueError(f"decisions.json: bad row for {row['keyword']}")
        rules[tag] = Rule(
            tag=tag,
            keyword=row["keyword"],
            basic=row["basic"],
            options=tuple(sorted(row.get("options", {}).items())),
            decision=ours["decision"],
            reason=ours["reason"],
        )
    if decided:
        raise ValueError("decisions.json: rows not in Table E.1-1")
    allow = _load("allowlist.json")
    allowed = frozenset(int(row["tag"], 16) for row in allow["rows"])
    safe = _load("safe_private.json")
    safe_private = MappingProxyType({
        (int(row["group"], 16), row["creator"].strip().lower(), int(row["element"], 16)): row["vr"]
        for row in safe["rows"]
    })
    return Profile(
        edition=str(table["_edition"]),
        rules=rules,
        allowed=allowed,
        safe_private=safe_private,
        patient_free_text=frozenset(r.keyword for r in rules.values()
                                    if r.decision == PATIENT_FREE_TEXT),
    )


def describe(options: Options) -> str:
    """Human-readable profile line stored with every report."""
    names = [meaning for field, (_, meaning) in OPTION_CODES.items() if getattr(options, field)]
    text = f"PS3.15 {load_profile().edition} Basic Application Confidentiality Profile"
    if names:
        text += " + " + ", ".join(n.removesuffix(" Option") for n in names)
    kept = sorted(options.accept_patient_free_text_risk) if options.clean_descriptors else []
    if kept:
        text += "; patient free text kept at the provider's risk (cleaned): " + ", ".join(kept)
    return text


def method_codes(options: Options, *, pixels_cleaned: bool = False) -> list[tuple[str, str]]:
    """Codes for DeidentificationMethodCodeSequence; Clean Pixel Data only where it was done."""
    codes = [BASIC_CODE]
    for field, code in OPTION_CODES.items():
        done = pixels_cleaned if field == "clean_pixel_data" else getattr(options, field)
        if done:
            codes.append(code)
    return codes
