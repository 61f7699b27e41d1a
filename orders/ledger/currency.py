"""ISO 4217 currency codes and their minor-unit exponents."""
from __future__ import annotations

import re
from decimal import Decimal

from orders.currency import currency_exponent as _exponent_of

_CODE = re.compile(r"[A-Z]{3}")


def normalize_currency(code: str) -> str:
    """The upper-case three-letter code (Stripe writes "usd"); ValueError for anything else."""
    if not isinstance(code, str) or not _CODE.fullmatch(code.upper()):
        raise ValueError(f"not an ISO 4217 currency code: {code!r}")
    return code.upper()


def currency_exponent(code: str) -> int:
    """Digits after the decimal point: 0 for JPY and KRW, 3 for BHD and KWD, 2 for most."""
    return _exponent_of(normalize_currency(code))


def minor_to_major(amount_minor: int, code: str) -> Decimal:
    """Decimal("12.34") for 1234 USD, Decimal("1234") for 1234 JPY."""
    exponent = currency_exponent(code)
    return Decimal(int(amount_minor)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_major(amount_minor: int, code: str) -> str:
    """The amount in major units with the currency's number of decimals, no grouping: "12.30"."""
    return f"{minor_to_major(amount_minor, code):f}"
