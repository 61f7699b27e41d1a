"""Pure pricing: currencies in minor units and the line-by-line price of an order line."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orders.currency import MoneyValueError, currency_exponent, format_money, from_minor, to_minor
from orders.pricing import (
    FLAT,
    PER_IMAGE,
    PER_STUDY,
    PRICING_MODELS,
    SUBSCRIPTION,
    PlanTerms,
    PriceLine,
    plan_words,
    price_line,
    tier_words,
)


# ---- currencies ----------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("eur", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3),
                                                ("KWD", 3), ("XYZ", 2)])
def test_currency_exponent(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_to_minor_and_back() -> None:
    assert to_minor(Decimal("45.00"), "USD") == 4500
    assert to_minor("0.4", "USD") == 40
    assert to_minor(Decimal("12000"), "JPY") == 12000
    assert to_minor(Decimal("1.234"), "BHD") == 1234
    assert from_minor(4500, "USD") == Decimal("45.00") and str(from_minor(5, "USD")) == "0.05"
    assert str(from_minor(12000, "JPY")) == "12000"
    assert str(from_minor(1234, "KWD")) == "1.234"


@pytest.mark.parametrize(("amount", "currency"), [("12.345", "USD"), ("10.5", "JPY"), ("NaN", "USD"),
                                                  ("Infinity", "EUR"), ("sNaN", "USD"), ("abc", "USD")])
def test_to_minor_refuses_what_the_currency_cannot_hold(amount: str, currency: str) -> None:
    with pytest.raises(MoneyValueError):
        to_minor(amount, currency)


def test_format_money() -> None:
    assert format_money(123450, "USD") == "1,234.50 USD"
    assert format_money(1234, "JPY") == "1,234 JPY"
    assert format_money(0, "EUR") == "0.00 EUR"
    assert format_money(-450, "eur") == "-4.50 EUR"


# ---- one line per plan ---------------------------------------------------------------------
def labels(price) -> list[tuple[str, int]]:  # noqa: ANN001
    return [(line.label, line.amount_minor) for line in price.lines]


def test_per_study_with_a_volume_tier_and_the_academic_discount() -> None:
    terms = PlanTerms(model=PER_STUDY, price_minor=4500, currency="USD", academic_discount_bps=2000,
                      volume_tiers=((50, 500), (100, 1000)))
    price = price_line(terms, study_count=120, image_count=9999, academic=True)
    assert labels(price) == [
        ("120 studies × 45.00 USD", 540000),
        ("Volume discount 10 % (≥ 100 studies)", -54000),
        ("Academic discount 20 %", -97200),
    ]
    assert price.total_minor == 388800
    assert price_line(terms, study_count=120, image_count=0, academic=False).total_minor == 486000
    assert labels(price_line(terms, study_count=49, image_count=0, academic=False)) == [
        ("49 studies × 45.00 USD", 220500)]


def test_the_best_tier_wins_even_when_listed_lower() -> None:
    terms = PlanTerms(model=PER_STUDY, price_minor=100, currency="USD", volume_tiers=((10, 1500), (20, 500)))
    assert labels(price_line(terms, study_count=30, image_count=0, academic=False))[1] == (
        "Volume discount 15 % (≥ 10 studies)", -450)


def test_per_image_prices_the_images() -> None:
    terms = PlanTerms(model=PER_IMAGE, price_minor=40, currency="USD", volume_tiers=((100, 1250),))
    price = price_line(terms, study_count=150, image_count=6001, academic=False)
    # 6001 × 0.40 = 2,400.40; 12.5 % of 240,040 minor = 30,005 exactly
    assert labels(price) == [("6,001 images × 0.40 USD", 240040), ("Volume discount 12.5 % (≥ 100 studies)", -30005)]
    assert price.total_minor == 210035


def test_flat_and_subscription_ignore_the_counts_and_tiers() -> None:
    flat = PlanTerms(model=FLAT, price_minor=800000, currency="EUR", academic_discount_bps=1500)
    price = price_line(flat, study_count=3, image_count=12, academic=True)
    assert labels(price) == [("Whole dataset (flat licence)", 800000), ("Academic discount 15 %", -120000)]
    yearly = PlanTerms(model=SUBSCRIPTION, price_minor=1200000, currency="USD")
    assert labels(price_line(yearly, study_count=0, image_count=0, academic=True)) == [
        ("12-month subscription (includes studies added during the term)", 1200000)]


def test_jpy_rounds_half_up_to_whole_yen_and_lines_add_up() -> None:
    terms = PlanTerms(model=PER_STUDY, price_minor=333, currency="JPY", academic_discount_bps=1250,
                      volume_tiers=((3, 750),))
    price = price_line(terms, study_count=7, image_count=0, academic=True)
    # 7 × 333 = 2,331; 7.5 % = 174.825 → 175; 2,156 × 12.5 % = 269.5 → 270 (half up)
    assert labels(price) == [("7 studies × 333 JPY", 2331), ("Volume discount 7.5 % (≥ 3 studies)", -175),
                             ("Academic discount 12.5 %", -270)]
    assert price.total_minor == 1886 == sum(line.amount_minor for line in price.lines)
    snap = price.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["total"] == "1,886 JPY" and snap["currency"] == "JPY" and snap["model"] == PER_STUDY
    assert snap["lines"][0] == {"label": "7 studies × 333 JPY", "amount_minor": 2331}


def test_free_data_costs_nothing_and_prints_no_discount() -> None:
    terms = PlanTerms(model=PER_STUDY, price_minor=0, currency="USD", academic_discount_bps=5000,
                      volume_tiers=((1, 1000),))
    price = price_line(terms, study_count=40, image_count=0, academic=True)
    assert price.lines == (PriceLine("40 studies × 0.00 USD", 0),) and price.total_minor == 0


def test_one_study_and_one_image_are_singular() -> None:
    assert price_line(PlanTerms(PER_STUDY, 4500, "USD"), study_count=1, image_count=0,
                      academic=False).lines[0].label == "1 study × 45.00 USD"
    assert price_line(PlanTerms(PER_IMAGE, 40, "USD"), study_count=1, image_count=1,
                      academic=False).lines[0].label == "1 image × 0.40 USD"


@pytest.mark.parametrize("kwargs", [
    {"model": "per_gram"}, {"price_minor": -1}, {"academic_discount_bps": 9001},
    {"volume_tiers": ((0, 100),)}, {"volume_tiers": ((10, 0),)}, {"volume_tiers": ((10, 9500),)},
])
def test_terms_refuse_impossible_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PlanTerms(**{"model": PER_STUDY, "price_minor": 100, "currency": "USD", **kwargs})


def test_plan_and_tier_words() -> None:
    assert plan_words(PlanTerms(PER_STUDY, 4500, "USD")) == "45.00 USD per study"
    assert plan_words(PlanTerms(PER_IMAGE, 40, "USD")) == "0.40 USD per image"
    assert plan_words(PlanTerms(FLAT, 800000, "EUR")) == "8,000.00 EUR flat for the whole dataset"
    assert plan_words(PlanTerms(SUBSCRIPTION, 1200000, "USD")) == "12,000.00 USD per year"
    assert plan_words(PlanTerms(PER_STUDY, 0, "USD")) == "Free"
    assert tier_words(PlanTerms(PER_STUDY, 1, "USD", volume_tiers=((100, 1000), (1000, 2500)))) == [
        "10 % off from 100 studies", "25 % off from 1,000 studies"]


# ---- property: the lines add up, the total is between 0 and the undiscounted amount ----------
@st.composite
def plan_terms(draw) -> PlanTerms:  # noqa: ANN001
    starts = draw(st.lists(st.integers(min_value=1, max_value=10_000), max_size=5, unique=True))
    tiers = tuple((start, draw(st.integers(min_value=1, max_value=9000))) for start in sorted(starts))
    return PlanTerms(
        model=draw(st.sampled_from(PRICING_MODELS)),
        price_minor=draw(st.integers(min_value=0, max_value=10_000_000 * 100)),
        currency=draw(st.sampled_from(["USD", "JPY", "EUR", "KWD"])),
        academic_discount_bps=draw(st.integers(min_value=0, max_value=9000)),
        volume_tiers=tiers,
    )


@settings(max_examples=500, deadline=None)
@given(terms=plan_terms(), study_count=st.integers(min_value=0, max_value=1_000_000),
       image_count=st.integers(min_value=0, max_value=50_000_000), academic=st.booleans())
def test_lines_always_sum_to_the_total(terms: PlanTerms, study_count: int, image_count: int,
                                       academic: bool) -> None:
    price = price_line(terms, study_count=study_count, image_count=image_count, academic=academic)
    undiscounted = price.lines[0].amount_minor
    assert sum(line.amount_minor for line in price.lines) == price.total_minor
    assert 0 <= price.total_minor <= undiscounted
    assert all(line.amount_minor <= 0 for line in price.lines[1:])
    assert all(isinstance(line.amount_minor, int) for line in price.lines)
    assert price.snapshot()["total_minor"] == price.total_minor
