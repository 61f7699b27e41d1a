"""Currencies as integer minor units (cents, yen, fils): the exponent of each ISO 4217 code,
conversion from and to ``Decimal`` major units, and display. No floats, no Django."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 currencies whose minor unit is not 1/100 of the major unit; every other code has
# two decimal places. The one table for prices, orders and the ledger.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

# The currencies datasets may be priced in (all settled by Stripe), in the order the form lists them.
ACCEPTED_CURRENCIES: tuple[tuple[str, str], ...] = (
    ("USD", "USD — US dollar"),
    ("EUR", "EUR — euro"),
    ("GBP", "GBP — pound sterling"),
    ("CHF", "CHF — Swiss franc"),
    ("CAD", "CAD — Canadian dollar"),
    ("AUD", "AUD — Australian dollar"),
    ("JPY", "JPY — Japanese yen"),
    ("SEK", "SEK — Swedish krona"),
    ("NOK", "NOK — Norwegian krone"),
    ("DKK", "DKK — Danish krone"),
)
ACCEPTED_CODES = frozenset(code for code, _ in ACCEPTED_CURRENCIES)


class MoneyValueError(ValueError):
    """An amount that cannot be expressed in whole minor units of its currency."""


def currency_exponent(code: str) -> int:
    """Decimal places of the currency's minor unit: 0 (JPY, KRW…), 3 (BHD, KWD…), 4 (CLF) or 2."""
    return EXPONENTS.get(code.upper(), 2)


def to_minor(amount: Decimal | int | str, currency: str) -> int:
    """``amount`` major units as whole minor units; refuses NaN, infinities and more decimal
    places than the currency has (12.345 USD, 10.5 JPY) instead of rounding them away."""
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except (InvalidOperation, ValueError):
        raise MoneyValueError(f"{str(amount)[:20]!r} is not a number.") from None
    if not value.is_finite():
        raise MoneyValueError(f"{str(amount)[:20]!r} is not a finite number.")
    exponent = currency_exponent(currency)
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        places = "no decimal places" if exponent == 0 else f"at most {exponent} decimal places"
        raise MoneyValueError(f"{currency.upper()} amounts have {places} (got {value}).")
    return int(minor)


def from_minor(minor: int, currency: str) -> Decimal:
    """Whole minor units as a ``Decimal`` of major units with the currency's decimal places."""
    exponent = currency_exponent(currency)
    return Decimal(int(minor)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_money(minor: int, currency: str) -> str:
    """"1,234.50 USD", "1,234 JPY", "-4.50 EUR": grouped digits and the ISO code."""
    return f"{from_minor(minor, currency):,} {currency.upper()}"


def format_major(amount: Decimal | int | str, currency: str) -> str:
    """A ``Decimal`` of major units (a list price per study, a cohort total) as
    :func:`format_money` shows minor units: the currency's decimal places, rounded half up
    (a per-study price derived from a flat plan may have more), grouped, with the code
    ("" for an amount whose currency nobody stated: two places and no code)."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    places = Decimal(1).scaleb(-currency_exponent(currency))
    return f"{value.quantize(places, rounding=ROUND_HALF_UP):,} {currency.upper()}".rstrip()
