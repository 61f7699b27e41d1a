"""The one decision both paths carry out: what happens to this element (tag, VR) under
these options.

engine.py (pydicom data sets) and fast.py (raw elements) each walk their data set and
call ``decide`` for every element; they only carry the answer out (and may decline, on
the fast path, to hand a file to the pydicom path). The rules themselves are data
(deid/data/*.json), read by profile.load_profile() alone. The verifier (verify*.py) does
not use this module: it checks the outputs on its own.

``decide`` is pure: the same arguments give the same Action, so the fast path caches it.
"""

from __future__ import annotations

from typing import NamedTuple

from deid import profile
from deid.profile import Options, load_profile, safe_private_vr
from deid.values import DUMMY_VALUES, PATIENT_AGE, PATIENT_ID, PATIENT_NAME, TEXT_VRS


class Action(NamedTuple):
    """What to do with one element. ``count``: the report's counter to add one to (None:
    none; remapping counts "uid_remapped" itself). ``creator``: a private attribute that
    is kept, whose private creator element is kept with it."""

    op: str
    count: str | None = None
    creator: bool = False


# Operations (Action.op).
DROP = "drop"  # group lengths and file meta: rebuilt, not counted
REMOVE = "remove"
PSEUDONYM = "pseudonym"  # top-level PatientID / PatientName: the patient's pseudonym
EMPTY = "empty"  # zero-length value (an empty sequence for SQ)
DUMMY = "dummy"  # DUMMY_VALUES[vr] (an empty sequence for SQ)
REMAP = "remap"  # UIDs remapped with the key
KEEP = "keep"  # the input's value
CAP_AGE = "cap_age"  # the input's value, ages over 89 as 090Y
RECURSE = "recurse"  # a sequence whose items go through the profile
SHIFT_DATE = "shift_date"  # DA/DT moved by the patient's shift (removed if unparseable)
CLEAN_TEXT = "clean_text"  # the file's identifying values scrubbed out
# An opted-in patient free-text value: cleaned as CLEAN_TEXT where the file's person
# names can be verified (Scrubber.names_verifiable), removed where they cannot.
CLEAN_PATIENT_TEXT = "clean_patient_text"

A_DROP = Action(DROP)
A_REMOVE = Action(REMOVE, "removed")
A_OVERLAY = Action(REMOVE, "overlay_removed")
A_KEEP = Action(KEEP, "kept")
# Private attributes: not listed as safe (or Retain Safe Private off), and listed with
# another VR than the table's (UN included). Distinct objects: the fast path declines
# a listed element it cannot read as pydicom does (UN, sequences).
A_PRIVATE_REMOVED = Action(REMOVE, "private_removed")
A_PRIVATE_OTHER_VR = Action(REMOVE, "private_removed")


def decide(tag: int, vr: str, options: Options, *, top: bool = False,
           creator: str | None = None) -> Action:
    """The fate of element ``tag`` with VR ``vr`` under ``options``.

    ``top``: the element is in the top-level data set (not in a sequence item).
    ``creator``: for a private element, its private creator's value, stripped and
    lower-case ("" or None when it has none); read only with Retain Safe Private.
    """
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0 or group == 0x0002:
        return A_DROP
    if group % 2:
        return _private(group, element, vr, options, creator)
    if group & 0xFF00 in (0x5000, 0x6000):
        return A_OVERLAY  # curves (50xx) and overlays (60xx)
    if top and tag in (PATIENT_ID, PATIENT_NAME):
        return Action(PSEUDONYM, "pseudonymized")
    prof = load_profile()
    code = prof.action_for(tag, options)
    if code is None:
        code = profile.KEEP if tag in prof.allowed else profile.REMOVE
    return _by_vr(tag, vr, code, options)


def _by_vr(tag: int, vr: str, code: str, options: Options) -> Action:
    """A single action code of the table carried out on an element of this VR."""
    if code == profile.REMOVE:
        return A_REMOVE
    if code == profile.ZERO:
        return Action(EMPTY, "zeroed")
    if code == profile.DUMMY:
        if vr == "UI":
            return Action(REMAP)
        if vr == "SQ":
            return Action(EMPTY, "dummied")  # no sensible dummy item: empty sequence
        return Action(DUMMY, "dummied") if vr in DUMMY_VALUES else A_REMOVE
    if code == profile.KEEP:
        if vr == "SQ":
            return Action(RECURSE, "kept")
        return Action(CAP_AGE, "kept") if tag == PATIENT_AGE else A_KEEP
    if code in (profile.CLEAN, profile.CLEAN_PATIENT_TEXT):
        if vr == "SQ":
            # Patient free text is text: a sequence in its place is not what was opted in.
            return Action(RECURSE, "cleaned") if code == profile.CLEAN else A_REMOVE
        if vr in ("DA", "DT", "TM"):
            if not options.retain_longitudinal_modified_dates or code != profile.CLEAN:
                return A_REMOVE
            # whole-day shifts leave times valid
            return A_KEEP if vr == "TM" else Action(SHIFT_DATE, "date_shifted")
        if vr in TEXT_VRS:
            if code == profile.CLEAN:
                return Action(CLEAN_TEXT, "cleaned")
            return Action(CLEAN_PATIENT_TEXT, "cleaned")
        return A_REMOVE
    if code == profile.UID:
        if vr == "UI":
            return Action(REMAP)
        return Action(RECURSE) if vr == "SQ" else A_REMOVE
    raise ValueError(f"unknown action {code}")  # pragma: no cover - data tested


def _private(group: int, element: int, vr: str, options: Options,
             creator: str | None) -> Action:
    """Private attributes: removed, except the safe ones (Table E.3.10-1) with Retain
    Safe Private, when group, creator, offset and VR are the table's. Creator elements
    themselves count as removed; a kept attribute keeps its creator (Action.creator)."""
    if not options.retain_safe_private or element < 0x1000:
        return A_PRIVATE_REMOVED
    listed_vr = load_profile().safe_private.get((group, creator or "", element & 0xFF))
    if listed_vr is None:
        return A_PRIVATE_REMOVED
    if not safe_private_vr(vr, listed_vr):
        return A_PRIVATE_OTHER_VR  # another attribute than the one the table lists
    if vr == "SQ":
        return Action(RECURSE, "private_kept", creator=True)  # the profile on its items
    if vr == "UI":
        return Action(REMAP, "private_kept", creator=True)
    return Action(KEEP, "private_kept", creator=True)
