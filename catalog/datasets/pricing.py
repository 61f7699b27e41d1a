"""A dataset's pricing plan: checked here for every writer (form, API, seed), and the list
price per study derived from it for search."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from catalog.exceptions import CatalogError
from catalog.models import Dataset, LicenceType, PricingModel
from marketplace.input_guard import MAX_AMOUNT
from orders.currency import ACCEPTED_CODES, MoneyValueError, from_minor, to_minor
from orders.pricing import MAX_DISCOUNT_BPS, METERED

# The most one unit of any plan may cost, in major units of its currency.
MAX_PLAN_PRICE = Decimal(10_000_000)
MAX_TIERS = 20
MAX_SAMPLE_STUDIES = 100_000

FIELD_LABELS = {
    "pricing_model": "Pricing plan", "price": "Price", "currency": "Currency",
    "sample_study_count": "Free sample", "academic_discount_bps": "Academic discount",
    "volume_tiers": "Volume tiers",
}


class PlanError(CatalogError):
    """A pricing plan refused; ``field`` names the input at fault (also in ``extra``)."""

    code = "bad_pricing_plan"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{FIELD_LABELS[field]}: {problem}", extra={"fields": {field: [problem]}})
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Plan:
    pricing_model: str
    price_minor: int
    currency: str
    sample_study_count: int
    academic_discount_bps: int
    volume_tiers: list[dict[str, int]]

    def as_audit(self) -> dict[str, object]:
        return asdict(self)


def _whole_number(field: str, raw: object, *, low: int, high: int, what: str) -> int:
    if isinstance(raw, bool):
        raise PlanError(field, f"must be a whole number of {what}.")
    try:
        value = Decimal(str(raw).strip() or "0")
    except (InvalidOperation, ValueError):
        raise PlanError(field, f"must be a whole number of {what} (got {str(raw)[:20]!r}).") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise PlanError(field, f"must be a whole number of {what} (got {str(raw)[:20]!r}).")
    if not low <= value <= high:
        raise PlanError(field, f"must be from {low:,} to {high:,} {what}.")
    return int(value)


def plan_price_minor(raw: object, currency: str) -> int:
    """A plan price typed in major units (Decimal or text) as minor units of ``currency``."""
    text = str(raw).strip()
    if not text:
        raise PlanError("price", "is required (0 for free data on a per-study or per-image plan).")
    if isinstance(raw, float):
        raise PlanError("price", "must be given as a decimal or text, not a binary float.")
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise PlanError("price", f"must be a number such as 12.50 (got {text[:20]!r}).") from None
    if not value.is_finite():
        raise PlanError("price", f"must be a finite number such as 12.50 (got {text[:20]!r}).")
    if value < 0:
        raise PlanError("price", "cannot be negative.")
    if value > MAX_PLAN_PRICE:
        raise PlanError("price", f"must be at most {MAX_PLAN_PRICE:,} {currency} for one unit of the plan.")
    try:
        return to_minor(value, currency)
    except MoneyValueError as exc:
        raise PlanError("price", str(exc)) from None


def bps_from_percent(raw: object, *, field: str) -> int:
    """A percentage as typed ("12.5", "20 %") as basis points, from 0 to 90 %."""
    text = str(raw if raw is not None else "").strip().rstrip("%").strip() or "0"
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise PlanError(field, f"must be a percentage such as 10 or 12.5 (got {text[:20]!r}).") from None
    if not value.is_finite() or value != value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP):
        raise PlanError(field, f"must be a percentage with at most 2 decimal places (got {text[:20]!r}).")
    if not 0 <= value <= MAX_DISCOUNT_BPS / 100:
        raise PlanError(field, f"must be from 0 to {MAX_DISCOUNT_BPS // 100} %.")
    return int(value * 100)


_TIER_LINE = re.compile(r"^\s*(?:≥|>=)?\s*(\S+?)\s*(?:studies)?\s*:\s*(\S+?)\s*%?\s*$")


def clean_volume_tiers(raw: object) -> list[dict[str, int]]:
    """Volume tiers as ``[{"min_studies": int, "discount_bps": int}, ...]`` from that list or
    from text with one "min studies: percent" per line ("100: 10" is 10 % off from 100
    studies). Ascending by min_studies, each once, 0 < discount ≤ 90 %."""
    tiers: list[dict[str, int]] = []
    if isinstance(raw, str):
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            found = _TIER_LINE.match(line)
            if not found:
                raise PlanError("volume_tiers", f"line {number} ({line.strip()[:30]!r}) is not "
                                                "\"min studies: percent\", e.g. \"100: 10\".")
            min_studies = _whole_number("volume_tiers", found.group(1), low=1, high=10**9, what="studies")
            bps = bps_from_percent(found.group(2), field="volume_tiers")
            tiers.append({"min_studies": min_studies, "discount_bps": bps})
    else:
        for item in list(raw or []):  # type: ignore[call-overload]
            if not isinstance(item, dict) or set(item) != {"min_studies", "discount_bps"}:
                raise PlanError("volume_tiers", 'each tier is {"min_studies": int, "discount_bps": int}.')
            tiers.append({
                "min_studies": _whole_number("volume_tiers", item["min_studies"], low=1, high=10**9, what="studies"),
                "discount_bps": _whole_number("volume_tiers", item["discount_bps"], low=0, high=10**9,
                                              what="basis points"),
            })
    if len(tiers) > MAX_TIERS:
        raise PlanError("volume_tiers", f"at most {MAX_TIERS} tiers.")
    for before, tier in zip(tiers, tiers[1:]):
        if tier["min_studies"] == before["min_studies"]:
            raise PlanError("volume_tiers", f"{tier['min_studies']:,} studies is listed twice.")
        if tier["min_studies"] < before["min_studies"]:
            raise PlanError("volume_tiers", "list the tiers in ascending order of studies "
                                            f"({tier['min_studies']:,} comes after {before['min_studies']:,}).")
    for tier in tiers:
        if not 0 < tier["discount_bps"] <= MAX_DISCOUNT_BPS:
            raise PlanError("volume_tiers", f"the discount from {tier['min_studies']:,} studies must be above 0 "
                                            f"and at most {MAX_DISCOUNT_BPS // 100} %.")
    return tiers


def plan_clean(
    *,
    pricing_model: object,
    price: object,
    currency: object,
    licence_type: str,
    sample_study_count: object = 0,
    academic_discount_bps: object = 0,
    volume_tiers: object = (),
    study_count: int | None = None,
) -> Plan:
    """The plan as stored, or a PlanError naming the field. ``price`` is in major units;
    ``study_count`` (a published dataset's) bounds the free sample."""
    model = str(pricing_model or "")
    if model not in PricingModel.values:
        raise PlanError("pricing_model", f"choose one of {', '.join(PricingModel.values)} (got {model[:20]!r}).")
    code = str(currency or "").strip().upper()
    if code not in ACCEPTED_CODES:
        raise PlanError("currency", f"choose one of {', '.join(sorted(ACCEPTED_CODES))} (got {code[:8]!r}).")
    price_minor = plan_price_minor(price, code)
    if licence_type == LicenceType.FREE and price_minor > 0:
        raise PlanError("price", "a dataset under a free / open licence is priced 0; set the price to 0 "
                                 "or choose another licence type.")
    if model not in METERED and price_minor == 0:
        raise PlanError("price", "a flat or subscription plan needs a price above 0; for free data use a "
                                 "per-study or per-image plan at 0.")
    sample = _whole_number("sample_study_count", sample_study_count, low=0, high=MAX_SAMPLE_STUDIES,
                           what="studies")
    if study_count is not None and sample > study_count:
        raise PlanError("sample_study_count", f"{sample:,} studies is more than the dataset holds "
                                              f"({study_count:,}).")
    academic = _whole_number("academic_discount_bps", academic_discount_bps, low=0, high=MAX_DISCOUNT_BPS,
                             what="basis points (at most 90 %)")
    tiers = clean_volume_tiers(volume_tiers)
    if tiers and model not in METERED:
        raise PlanError("volume_tiers", "volume tiers apply to per-study and per-image plans only; "
                                        "remove them for a flat or subscription plan.")
    return Plan(pricing_model=model, price_minor=price_minor, currency=code, sample_study_count=sample,
                academic_discount_bps=academic, volume_tiers=tiers)


def list_price_per_study(*, pricing_model: str, price_minor: int, currency: str, study_count: int,
                         instance_count: int) -> Decimal:
    """The plan as a price per study (what search filters and sorts by): the price itself
    per study; per image × the mean images per study; a flat or yearly price ÷ the studies
    (0 while the dataset is empty). Rounded half-up to cents, at most numeric(12,2)."""
    price = from_minor(price_minor, currency)
    if pricing_model == PricingModel.PER_STUDY:
        value = price
    elif pricing_model == PricingModel.PER_IMAGE:
        value = price * instance_count / study_count if study_count else Decimal(0)
    else:
        value = price / study_count if study_count else Decimal(0)
    return min(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), MAX_AMOUNT)


def dataset_list_price(dataset: Dataset) -> Decimal:
    return list_price_per_study(pricing_model=dataset.pricing_model, price_minor=dataset.price_minor,
                                currency=dataset.currency, study_count=dataset.study_count,
                                instance_count=dataset.instance_count)


def dataset_refresh_list_price(*, dataset_id: int) -> None:
    """Derive price_per_study again after the dataset's counts changed (ingestion)."""
    dataset = Dataset.objects.only("pricing_model", "price_minor", "currency", "study_count",
                                   "instance_count", "price_per_study").get(pk=dataset_id)
    price = dataset_list_price(dataset)
    if price != dataset.price_per_study:
        Dataset.objects.filter(pk=dataset_id).update(price_per_study=price)


def plan_of(dataset: Dataset) -> Plan:
    return Plan(pricing_model=dataset.pricing_model, price_minor=dataset.price_minor, currency=dataset.currency,
                sample_study_count=dataset.sample_study_count, academic_discount_bps=dataset.academic_discount_bps,
                volume_tiers=list(dataset.volume_tiers or []))


def price_major(dataset: Dataset) -> Decimal:
    """The plan's price in major units of its currency (as typed in the form)."""
    return from_minor(dataset.price_minor, dataset.currency)

