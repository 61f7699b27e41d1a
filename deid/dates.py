"""Per-patient date shifting (Retain Longitudinal Temporal Information, Modified Dates).

All dates of one patient move back by the same whole number of days, so intervals,
weekdays-from-each-other and DA+TM / DT combinations stay valid; times are untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, timedelta

MAX_SHIFT_DAYS = 3650
_DOMAIN = b"deid/date-shift/v1\x00"


def shift_days(seed: str, key: bytes) -> int:
    """Days to move back, 0..MAX_SHIFT_DAYS, derived from key + patient seed."""
    digest = hmac.new(key, _DOMAIN + seed.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SHIFT_DAYS + 1)


def _shift_date_text(text: str, days: int) -> str | None:
    """Shift YYYY, YYYYMM or YYYYMMDD keeping its precision; None if not a date."""
    if not re.fullmatch(r"\d{4}(\d{2}(\d{2})?)?", text):
        return None
    year = int(text[:4])
    month = int(text[4:6]) if len(text) >= 6 else 1
    day = int(text[6:8]) if len(text) == 8 else 1
    try:
        shifted = date(year, month, day) - timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    full = f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"
    return full[: len(text)]


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (also a "from-to" range); None when it cannot be parsed."""
    value = value.strip()
    if value == "":
        return ""
    parts = value.split("-")
    if len(parts) > 2:
        return None
    out: list[str] = []
    for part in parts:
        if part == "":
            out.append("")
            continue
        shifted = _shift_date_text(part, days)
        if shifted is None:
            return None
        out.append(shifted)
    return "-".join(out)


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT value (date part only; time and UTC offset stay)."""
    value = value.strip()
    if value == "":
        return ""
    match = re.fullmatch(r"(\d{4}(?:\d{2}(?:\d{2})?)?)(.*)", value)
    if match is None:
        return None
    head, rest = match.groups()
    # Ranges of DT are rare; only a plain suffix of time/fraction/offset is accepted.
    if rest and not re.fullmatch(r"(\d{2}){0,3}(\.\d{1,6})?([+-]\d{4})?", rest):
        return None
    shifted = _shift_date_text(head, days)
    return None if shifted is None else shifted + rest


def parse_da(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, TypeError):
        return None
