"""The price of one order line under a dataset's pricing plan, line by line.

Pure: no database reads or writes. All arithmetic is ``Decimal`` on integer minor units
(orders/currency.py); each printed line is rounded half-up to whole minor units, so the
lines always add up to the total exactly.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from orders.currency import format_money

PER_STUDY, PER_IMAGE, FLAT, SUBSCRIPTION = "per_study", "per_image", "flat", "subscription"
PRICING_MODELS = (PER_STUDY, PER_IMAGE, FLAT, SUBSCRIPTION)
# Plans priced by quantity: volume tiers apply to these only (a flat or yearly price already
# covers the whole dataset, whatever the number of its studies).
METERED = (PER_STUDY, PER_IMAGE)
MAX_DISCOUNT_BPS = 9000  # 90 %
BPS = Decimal(10_000)


def percent_words(bps: int) -> str:
    """Basis points as a percentage for people: 1000 → "10 %", 1250 → "12.5 %"."""
    value = (Decimal(bps) / 100).normalize()
    return f"{value:f} %"


def _round(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class PlanTerms:
    """What a dataset charges: the model, the price in minor units of ``currency`` (per
    study, per image, for the whole dataset, or per year), the academic discount and the
    volume tiers as ``((min_studies, discount_bps), ...)``, ascending."""

    model: str
    price_minor: int
    currency: str
    academic_discount_bps: int = 0
    volume_tiers: tuple[tuple[int, int], ...] = ()
    sample_study_count: int = 0

    def __post_init__(self) -> None:
        if self.model not in PRICING_MODELS:
            raise ValueError(f"unknown pricing model {self.model!r}")
        if self.price_minor < 0:
            raise ValueError("price_minor cannot be negative")
        if not 0 <= self.academic_discount_bps <= MAX_DISCOUNT_BPS:
            raise ValueError("academic_discount_bps must be from 0 to 9000")
        for min_studies, bps in self.volume_tiers:
            if min_studies < 1 or not 0 < bps <= MAX_DISCOUNT_BPS:
                raise ValueError(f"bad volume tier ({min_studies}, {bps})")

    @classmethod
    def from_dataset(cls, dataset: Any) -> PlanTerms:
        return cls(
            model=dataset.pricing_model, price_minor=int(dataset.price_minor), currency=dataset.currency,
            academic_discount_bps=int(dataset.academic_discount_bps),
            volume_tiers=tiers_from_json(dataset.volume_tiers),
            sample_study_count=int(dataset.sample_study_count),
        )

    @property
    def is_free(self) -> bool:
        return self.price_minor == 0


def tiers_from_json(raw: Iterable[dict[str, int]] | None) -> tuple[tuple[int, int], ...]:
    """The stored form ``[{"min_studies": 100, "discount_bps": 1000}, ...]`` as sorted pairs."""
    return tuple(sorted((int(t["min_studies"]), int(t["discount_bps"])) for t in (raw or [])))


@dataclass(frozen=True)
class PriceLine:
    label: str
    amount_minor: int  # discounts are negative


@dataclass(frozen=True)
class LinePrice:
    model: str
    currency: str
    lines: tuple[PriceLine, ...]
    total_minor: int

    def snapshot(self) -> dict[str, Any]:
        """JSON-able record of this price, kept with the order line it priced."""
        return {
            "model": self.model, "currency": self.currency, "total_minor": self.total_minor,
            "total": format_money(self.total_minor, self.currency),
            "lines": [{"label": line.label, "amount_minor": line.amount_minor} for line in self.lines],
        }


def _base_line(terms: PlanTerms, study_count: int, image_count: int) -> PriceLine:
    unit = format_money(terms.price_minor, terms.currency)
    if terms.model == PER_STUDY:
        noun = "study" if study_count == 1 else "studies"
        return PriceLine(f"{study_count:,} {noun} × {unit}", terms.price_minor * study_count)
    if terms.model == PER_IMAGE:
        noun = "image" if image_count == 1 else "images"
        return PriceLine(f"{image_count:,} {noun} × {unit}", terms.price_minor * image_count)
    if terms.model == FLAT:
        return PriceLine("Whole dataset (flat licence)", terms.price_minor)
    return PriceLine("12-month subscription (includes studies added during the term)", terms.price_minor)


def best_tier(terms: PlanTerms, study_count: int) -> tuple[int, int] | None:
    """The volume tier with the largest discount among those ``study_count`` reaches."""
    if terms.model not in METERED:
        return None
    reached = [(bps, min_studies) for min_studies, bps in terms.volume_tiers if study_count >= min_studies]
    if not reached:
        return None
    bps, min_studies = max(reached)
    return min_studies, bps


def price_line(terms: PlanTerms, *, study_count: int, image_count: int, academic: bool) -> LinePrice:
    """The price of ``study_count`` studies holding ``image_count`` images under ``terms``:
    the base line, then the best volume tier (metered plans), then the academic discount
    on what remains (``academic``: the buyer's organization is a verified academic one)."""
    if study_count < 0 or image_count < 0:
        raise ValueError("counts cannot be negative")
    base = _base_line(terms, study_count, image_count)
    lines = [base]
    running = base.amount_minor
    tier = best_tier(terms, study_count)
    if tier is not None and running:
        min_studies, bps = tier
        cut = _round(Decimal(running) * bps / BPS)
        lines.append(PriceLine(f"Volume discount {percent_words(bps)} (≥ {min_studies:,} studies)", -cut))
        running -= cut
    if academic and terms.academic_discount_bps and running:
        cut = _round(Decimal(running) * terms.academic_discount_bps / BPS)
        lines.append(PriceLine(f"Academic discount {percent_words(terms.academic_discount_bps)}", -cut))
        running -= cut
    return LinePrice(model=terms.model, currency=terms.currency, lines=tuple(lines), total_minor=running)


def plan_words(terms: PlanTerms) -> str:
    """The plan for people: "45.00 USD per study", "8,000.00 EUR flat for the whole dataset",
    "12,000.00 USD per year" (a subscription)."""
    price = format_money(terms.price_minor, terms.currency)
    if terms.model == PER_STUDY:
        return "Free" if terms.is_free else f"{price} per study"
    if terms.model == PER_IMAGE:
        return "Free" if terms.is_free else f"{price} per image"
    if terms.model == FLAT:
        return f"{price} flat for the whole dataset"
    return f"{price} per year"


def tier_words(terms: PlanTerms) -> list[str]:
    """Each volume tier for people: "10 % off from 100 studies"."""
    if terms.model not in METERED:
        return []
    return [f"{percent_words(bps)} off from {min_studies:,} studies" for min_studies, bps in terms.volume_tiers]
