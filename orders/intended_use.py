"""What the buyer says an order's data is for: a category and a few sentences, checked at
checkout and kept on the order for the providers asked to consent and the admin who
approves the contract."""
from __future__ import annotations

from orders.exceptions import OrderError
from orders.models import Order

MIN_INTENDED_USE = 20
MAX_INTENDED_USE = 2000


class IntendedUseError(OrderError):
    code = "intended_use"


def intended_use_clean(*, intended_use: str | None, use_category: str | None) -> tuple[str, str]:
    """(text, category) as stored, or IntendedUseError naming what is missing."""
    if use_category not in Order.UseCategory.values:
        names = ", ".join(label.lower() for label in Order.UseCategory.labels)
        raise IntendedUseError(f"Choose what the data is for: {names}.")
    text = (intended_use or "").strip()
    if len(text) < MIN_INTENDED_USE:
        raise IntendedUseError(f"Describe the intended use of the data in at least {MIN_INTENDED_USE} characters: "
                               f"the providers and the administrator read it.")
    if len(text) > MAX_INTENDED_USE:
        raise IntendedUseError(f"The intended use is longer than {MAX_INTENDED_USE} characters.")
    if "\x00" in text:
        raise IntendedUseError("The intended use holds characters that cannot be stored.")
    return text, use_category
