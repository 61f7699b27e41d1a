"""Properties (hypothesis, derandomized, a fixed number of examples).

The largest-remainder split: parts are never negative, sum to the total and each is within
one minor unit of its exact share.

The ledger: for random histories of charges (one to four lines over four providers with
different fees, order-level discounts), refunds of random lines, transfers, transfer
reversals, shortfalls and nettings in two currencies, every transaction sums to zero (the
database's commit-time check passes), cash is charges − refunds − transfers + reversals,
each provider's payable − receivable is its net − transferred, and replaying the same
postings in another order, some of them twice, gives the same balances. Each history is
posted inside a savepoint that is rolled back afterwards (the ledger cannot be deleted).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.ledger import services as ledger
from orders.ledger.models import LedgerEntry, LedgerTransaction

from .conftest import check_now

CURRENCIES = ["USD", "JPY"]
EXAMPLES = 50


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(total=st.integers(0, 10**12), weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=12))
def test_largest_remainder_parts_are_exact_and_within_one_of_their_share(total, weights):
    parts = ledger.split_largest_remainder(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total
    assert all(part >= 0 for part in parts)
    effective = weights if any(weights) else [1] * len(weights)
    for part, weight in zip(parts, effective):
        assert abs(part - Fraction(total * weight, sum(effective))) < 1


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(gross=st.integers(0, 10**12), bps=st.integers(0, 10_000))
def test_the_fee_is_the_exact_fee_rounded_half_up(gross, bps):
    exact = Fraction(gross * bps, 10_000)
    fee = ledger.fee_minor(gross, bps)
    assert 0 <= fee <= gross
    assert exact - Fraction(1, 2) <= fee < exact + Fraction(1, 2) or fee == exact + Fraction(1, 2)


charges = st.lists(st.fixed_dictionaries({
    "currency": st.sampled_from(CURRENCIES),
    "lines": st.lists(st.tuples(st.integers(0, 3), st.integers(1, 50_000)), min_size=1, max_size=4),
    "discount": st.integers(0, 500),
    "refunded": st.lists(st.booleans(), min_size=4, max_size=4),
}), min_size=1, max_size=4)
provider_ops = st.lists(st.tuples(st.sampled_from(["transfer", "reversal", "shortfall", "netting"]),
                                  st.integers(0, 3), st.sampled_from(CURRENCIES), st.integers(1, 20_000)),
                        max_size=8)


def _history(providers, charge_specs, ops):  # noqa: ANN001, ANN202
    """The postings as (callable) and the cash each currency should end with."""
    postings: list[Callable[[], object]] = []
    cash: Counter[str] = Counter()
    for i, spec in enumerate(charge_specs):
        currency = spec["currency"]
        lines = [(providers[p], 100 * i + j, amount) for j, (p, amount) in enumerate(spec["lines"])]
        total = max(1, sum(amount for *_, amount in lines) - spec["discount"])
        shares = ledger.shares_for(total, lines)
        postings.append(lambda i=i, c=currency, t=total, s=shares: ledger.post_charge(f"charge:{i}", i + 1, c, t, s))
        cash[currency] += total
        for share, refunded in zip(shares, spec["refunded"]):
            if refunded and share.gross_minor:
                part = (share.provider_id, share.order_line_id, share.net_minor, share.fee_minor)
                postings.append(lambda i=i, c=currency, part=part: ledger.post_refund(
                    f"refund:{i}:line:{part[1]}", i + 1, c, [part]))
                cash[currency] -= share.gross_minor
    posters = {"transfer": lambda r, p, c, a: ledger.post_transfer(r, None, p, c, a),
               "reversal": lambda r, p, c, a: ledger.post_transfer_reversal(r, None, p, c, a),
               "shortfall": lambda r, p, c, a: ledger.post_reversal_shortfall(r, None, p, c, a),
               "netting": ledger.post_receivable_netting}
    for n, (kind, p, currency, amount) in enumerate(ops):
        postings.append(lambda f=posters[kind], r=f"{kind}:{n}", p=providers[p], c=currency, a=amount: f(r, p, c, a))
        cash[currency] += {"transfer": -amount, "reversal": amount}.get(kind, 0)
    return postings, cash


def _state(providers) -> dict:  # noqa: ANN001
    balances = {(row["account__kind"], row["account__provider_id"], row["currency"]): row["total"]
                for row in LedgerEntry.objects.values("account__kind", "account__provider_id", "currency")
                .annotate(total=Sum("amount_minor"))}
    positions = {(p.pk, c): ledger.provider_balances(p, c) for p in providers for c in CURRENCIES}
    return {"balances": balances, "positions": positions, "transactions": LedgerTransaction.objects.count()}


def _post_and_read(providers, postings, order: list[int]) -> dict:  # noqa: ANN001
    with transaction.atomic():
        for i in order:
            postings[i]()
        check_now()  # the database's commit-time balance check, now
        with connection.cursor() as cursor:
            cursor.execute("SELECT transaction_id FROM ledger_ledgerentry GROUP BY 1 HAVING sum(amount_minor) <> 0")
            assert cursor.fetchall() == []
        state = _state(providers)
        transaction.set_rollback(True)
    return state


@pytest.mark.django_db
def test_any_history_balances_and_its_final_state_does_not_depend_on_order(providers):
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(charge_specs=charges, ops=provider_ops, data=st.data())
    def run(charge_specs, ops, data) -> None:  # noqa: ANN001
        postings, cash = _history(providers, charge_specs, ops)
        first = _post_and_read(providers, postings, list(range(len(postings))))
        assert first["transactions"] == len(postings)
        for currency in CURRENCIES:
            assert first["balances"].get(("cash", None, currency), 0) == cash[currency]
            assert sum(v for (_, _, c), v in first["balances"].items() if c == currency) == 0
        for position in first["positions"].values():
            assert position["payable"] - position["receivable"] == position["net"] - position["transferred"]
            assert position["earned_gross"] == position["net"] + position["fees"]
        order = data.draw(st.permutations(range(len(postings))))
        replays = data.draw(st.lists(st.integers(0, len(postings) - 1), max_size=4))
        assert _post_and_read(providers, postings, [*order, *replays]) == first

    run()
