from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from deid.dates import MAX_SHIFT_DAYS, shift_da, shift_days, shift_dt
from deid.uids import patient_pseudonym, remap_uid

KEY = b"k" * 32
UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.113619.2.55.3.604688119.868.1249343483.504",
                                 "9" * 64, "1.2.3\x00"])
def test_remapped_uids_are_valid(uid: str) -> None:
    new = remap_uid(uid, KEY)
    assert len(new) <= 64 and UID_RE.match(new) and new.startswith("2.25.")


def test_remapped_uids_are_stable_per_key_and_differ_across_keys() -> None:
    assert remap_uid("1.2.3.4", KEY) == remap_uid("1.2.3.4", KEY)
    assert remap_uid("1.2.3.4", KEY) != remap_uid("1.2.3.5", KEY)
    assert remap_uid("1.2.3.4", KEY) != remap_uid("1.2.3.4", b"j" * 32)


def test_many_remapped_uids_are_valid_and_unique() -> None:
    out = {remap_uid(f"1.2.826.0.1.{i}", KEY) for i in range(2000)}
    assert len(out) == 2000 and all(len(u) <= 64 and UID_RE.match(u) for u in out)


def test_pseudonym_format() -> None:
    assert re.fullmatch(r"P-[0-9A-F]{12}", patient_pseudonym("pid:MRN1", KEY))
    assert patient_pseudonym("pid:MRN1", KEY) != patient_pseudonym("pid:MRN1", b"j" * 32)


def test_date_shift_is_per_patient_and_in_range() -> None:
    shifts = {shift_days(f"pid:{i}", KEY) for i in range(500)}
    assert shift_days("pid:A", KEY) == shift_days("pid:A", KEY)
    assert min(shifts) >= 0 and max(shifts) <= MAX_SHIFT_DAYS and len(shifts) > 300


def test_da_and_dt_shift_keep_intervals_and_precision() -> None:
    days = 400
    assert shift_da("20200315", days) == (date(2020, 3, 15) - timedelta(days)).strftime("%Y%m%d")
    assert shift_da("20200301-20200315", 14) == "20200216-20200301"
    assert shift_da("202003", 40) == "202001"
    assert shift_dt("20200315101500.123+0100", 1) == "20200314101500.123+0100"
    assert shift_da("garbage", 1) is None and shift_dt("2020X", 1) is None
    assert shift_da("", 5) == ""
