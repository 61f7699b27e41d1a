"""Posting and reading the ledger: the arithmetic, each posting's entries, idempotency,
balances, the monthly view, the platform summary and manual payouts."""
from __future__ import annotations

import csv
import datetime as dt
import io
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from marketplace.models import AuditEvent, Organization
from orders.ledger import services as ledger
from orders.ledger.currency import currency_exponent, format_major
from orders.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from orders.ledger.services import LedgerConflict, LedgerError, ProviderShare

from .conftest import check_now


def entries(txn: LedgerTransaction) -> dict[tuple[str, int | None], int]:
    return {(e.account.kind, e.account.provider_id): e.amount_minor for e in txn.entries.select_related("account")}


# ---- arithmetic (no database) --------------------------------------------------------------
@pytest.mark.parametrize("total, weights, parts", [
    (100, [1, 1, 1], [34, 33, 33]),
    (10, [0, 0, 0], [4, 3, 3]),
    (0, [5, 7], [0, 0]),
    (7, [0, 3], [0, 7]),
    (1000, [333, 333, 334], [333, 333, 334]),
    (5, [2, 1, 1, 1, 1], [1, 1, 1, 1, 1]),  # remainders 4/6 < 5/6
    (101, [50, 50], [51, 50]),
])
def test_largest_remainder_splits_exactly_with_ties_to_the_earlier_weight(total, weights, parts):
    assert ledger.split_largest_remainder(total, weights) == parts


@pytest.mark.parametrize("total, weights", [(-1, [1]), (10, []), (10, [1, -1]), (10, [1.5]), (True, [1]),
                                            (1.0, [1]), (10, "12")])
def test_largest_remainder_refuses_bad_input(total, weights):
    with pytest.raises(LedgerError):
        ledger.split_largest_remainder(total, weights)


@pytest.mark.parametrize("gross, bps, fee", [(1000, 1500, 150), (1, 5000, 1), (3, 1500, 0), (10, 1500, 2),
                                             (100, 0, 0), (100, 10_000, 100), (333, 1500, 50)])
def test_fees_round_half_up_in_minor_units(gross, bps, fee):
    assert ledger.fee_minor(gross, bps) == fee


@pytest.mark.parametrize("gross, bps", [(-1, 100), (10, -1), (10, 10_001)])
def test_fee_refuses_bad_input(gross, bps):
    with pytest.raises(LedgerError):
        ledger.fee_minor(gross, bps)


@pytest.mark.parametrize("code, exponent, shown", [("USD", 2, "12.34"), ("jpy", 0, "1234"), ("KRW", 0, "1234"),
                                                   ("BHD", 3, "1.234"), ("KWD", 3, "1.234"), ("EUR", 2, "12.34")])
def test_currency_exponents(code, exponent, shown):
    assert currency_exponent(code) == exponent
    assert format_major(1234, code) == shown


@pytest.mark.parametrize("code", ["US", "USDX", "", "U$D", None, "ÜSD"])
def test_a_currency_code_is_three_letters(code):
    with pytest.raises(ValueError):
        currency_exponent(code)


# ---- fees and shares -----------------------------------------------------------------------
@pytest.mark.django_db
def test_the_fee_is_the_providers_own_or_the_default(providers, settings):
    settings.PLATFORM_FEE_BPS = 1500
    assert [ledger.fee_bps_for(p) for p in providers] == [1500, 1000, 0, 10_000]


@pytest.mark.django_db
def test_shares_take_the_line_amounts_or_split_a_different_total(providers):
    default, ten, _, _ = providers
    shares = ledger.shares_for(3000, [(default, 1, 1000), (ten, 2, 2000)])
    assert shares == [ProviderShare(default.pk, 1, 1000, 150), ProviderShare(ten.pk, 2, 2000, 200)]
    discounted = ledger.shares_for(2000, [(default, 1, 1000), (ten, 2, 2000)])
    assert [s.gross_minor for s in discounted] == [667, 1333]
    assert [s.fee_minor for s in discounted] == [100, 133]


# ---- postings ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_charge_debits_cash_and_credits_each_providers_net_and_the_fees(providers):
    default, ten, free, whole = providers
    shares = ledger.shares_for(4000, [(default, 1, 1000), (default, 2, 1000), (ten, 3, 1000), (free, 4, 500),
                                      (whole, 5, 500)])
    txn = ledger.post_charge("charge:pi_1", 11, "usd", 4000, shares)
    check_now()
    assert (txn.kind, txn.currency, txn.order_id, txn.order_line_id) == ("charge", "USD", 11, None)
    assert entries(txn) == {
        ("cash", None): 4000,
        ("provider_payable", default.pk): -1700, ("platform_revenue", default.pk): -300,
        ("provider_payable", ten.pk): -900, ("platform_revenue", ten.pk): -100,
        ("provider_payable", free.pk): -500,  # no fee: no entry of 0
        ("platform_revenue", whole.pk): -500,  # all fee: nothing payable
    }


@pytest.mark.django_db
def test_posting_the_same_reference_twice_makes_one_transaction_and_changes_nothing(providers):
    shares = ledger.shares_for(1000, [(providers[0], 1, 1000)])
    first = ledger.post_charge("charge:pi_2", 12, "USD", 1000, shares)
    count = LedgerEntry.objects.count()
    again = ledger.post_charge("charge:pi_2", 12, "USD", 1000, shares)
    assert again.pk == first.pk
    assert LedgerTransaction.objects.filter(reference="charge:pi_2").count() == 1
    assert LedgerEntry.objects.count() == count
    assert ledger.post_transfer("tr:1", 12, providers[0], "USD", 850).pk == ledger.post_transfer(
        "tr:1", 12, providers[0].pk, "USD", 850).pk


@pytest.mark.django_db
def test_a_used_reference_with_other_content_is_a_conflict(providers):
    ledger.post_charge("charge:pi_3", 13, "USD", 1000, ledger.shares_for(1000, [(providers[0], 1, 1000)]))
    with pytest.raises(LedgerConflict):
        ledger.post_charge("charge:pi_3", 13, "USD", 999, ledger.shares_for(999, [(providers[0], 1, 999)]))
    with pytest.raises(LedgerConflict):
        ledger.post_stripe_fee("charge:pi_3", 13, "USD", 30)
    assert LedgerTransaction.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("call", [
    lambda p: ledger.post_charge("c", 1, "USD", 0, [ProviderShare(p.pk, 1, 0, 0)]),
    lambda p: ledger.post_charge("c", 1, "USD", 100, [ProviderShare(p.pk, 1, 90, 0)]),
    lambda p: ledger.post_charge("c", 1, "USD", 100, [ProviderShare(p.pk, 1, 100, 101)]),
    lambda p: ledger.post_charge("c", 1, "USD", 100, []),
    lambda p: ledger.post_charge("", 1, "USD", 100, [ProviderShare(p.pk, 1, 100, 1)]),
    lambda p: ledger.post_transfer("t", 1, p, "USD", 0),
    lambda p: ledger.post_transfer("t", 1, p, "USD", -5),
    lambda p: ledger.post_transfer("t", 1, None, "USD", 5),
    lambda p: ledger.post_transfer("t", 1, p, "US", 5),
    lambda p: ledger.post_refund("r", 1, "USD", []),
    lambda p: ledger.post_refund("r", 1, "USD", [(p, 1, 0, 0)]),
    lambda p: ledger.post_refund("r", 1, "USD", [(p, 1, 10, 1)], from_account="platform_revenue"),
    lambda p: ledger.post_invoice_paid("i", 1, "USD", 10.5),
    lambda p: ledger.account_for("cash", "USD", p),
    lambda p: ledger.account_for("provider_payable", "USD"),
])
def test_bad_postings_are_refused_before_the_database(providers, call):
    with pytest.raises(ValueError):
        call(providers[0])
    assert not LedgerTransaction.objects.exists()


@pytest.mark.django_db
def test_an_invoice_is_owed_then_paid_or_voided(providers):
    p = providers[1]
    shares = ledger.shares_for(2000, [(p, 7, 2000)])
    issued = ledger.post_invoice_issued("invoice:in_1", 20, "EUR", 2000, shares)
    assert entries(issued) == {("buyer_receivable", None): 2000, ("provider_payable", p.pk): -1800,
                               ("platform_revenue", p.pk): -200}
    assert issued.order_line_id == 7
    paid = ledger.post_invoice_paid("invoice_paid:in_1", 20, "EUR", 2000)
    assert entries(paid) == {("cash", None): 2000, ("buyer_receivable", None): -2000}
    ledger.post_invoice_issued("invoice:in_2", 21, "EUR", 2000, shares)
    void = ledger.post_refund("void:in_2", 21, "EUR", [(p, 7, 1800, 200)], from_account="buyer_receivable")
    assert entries(void) == {("buyer_receivable", None): -2000, ("provider_payable", p.pk): 1800,
                             ("platform_revenue", p.pk): 200}
    check_now()
    assert ledger.balance(ledger.account_for("buyer_receivable", "EUR")) == 0
    assert ledger.provider_balances(p, "EUR")["payable"] == 1800


@pytest.mark.django_db
def test_a_refund_after_a_transfer_reversed_in_part_leaves_a_receivable_netted_from_the_next_sale(providers):
    p = providers[0]  # 15 %
    ledger.post_charge("charge:pi_a", 1, "USD", 10_000, ledger.shares_for(10_000, [(p, 1, 10_000)]))
    assert ledger.transferable_amount(p, "USD") == 8500
    ledger.post_transfer("transfer:tr_a", 1, p, "USD", 8500)
    ledger.post_stripe_fee("fee:pi_a", 1, "USD", 320)
    refund = ledger.post_refund("refund:re_a:line:1", 1, "USD", [(p, 1, 8500, 1500)])
    assert refund.order_line_id == 1
    assert entries(refund) == {("cash", None): -10_000, ("provider_payable", p.pk): 8500,
                               ("platform_revenue", p.pk): 1500}
    ledger.post_transfer_reversal("reversal:trr_a", 1, p, "USD", 5000)  # the provider had 50.00 left
    ledger.post_reversal_shortfall("shortfall:trr_a", 1, p, "USD", 3500)
    assert ledger.provider_balances(p, "USD") == {"payable": 0, "receivable": 3500, "earned_gross": 0, "fees": 0,
                                                  "net": 0, "transferred": 3500}
    assert ledger.transferable_amount(p, "USD") == 0
    ledger.post_charge("charge:pi_b", 2, "USD", 6000, ledger.shares_for(6000, [(p, 2, 6000)]))
    assert ledger.transferable_amount(p, "USD") == 5100 - 3500
    ledger.post_receivable_netting("netting:b", p, "USD", 3500)
    assert ledger.transferable_amount(p, "USD") == 1600
    ledger.post_transfer("transfer:tr_b", 2, p, "USD", 1600)
    check_now()
    assert ledger.provider_balances(p, "USD") == {"payable": 0, "receivable": 0, "earned_gross": 6000, "fees": 900,
                                                  "net": 5100, "transferred": 5100}
    summary = ledger.platform_summary("USD")
    assert summary["cash"] == 10_000 - 8500 - 320 - 10_000 + 5000 + 6000 - 1600
    assert summary["platform_revenue"] == 900 and summary["stripe_fees"] == 320
    assert summary["provider_payable"] == 0 and summary["provider_receivable"] == 0
    assert summary["check"] == 0


@pytest.mark.django_db
def test_the_monthly_view_groups_sales_fees_and_transfers_by_month(providers):
    p = providers[1]  # 10 %
    shares = ledger.shares_for(1000, [(p, 1, 1000)])
    with mock.patch("django.utils.timezone.now", return_value=dt.datetime(2026, 1, 31, 23, 0, tzinfo=dt.UTC)):
        ledger.post_charge("charge:jan", 1, "USD", 1000, shares)
    with mock.patch("django.utils.timezone.now", return_value=dt.datetime(2026, 2, 1, 1, 0, tzinfo=dt.UTC)):
        ledger.post_charge("charge:feb", 2, "USD", 1000, shares)
        ledger.post_transfer("transfer:feb", None, p, "USD", 1200)
    with mock.patch("django.utils.timezone.now", return_value=dt.datetime(2026, 3, 5, tzinfo=dt.UTC)):
        ledger.post_refund("refund:mar", 2, "USD", [(p, 1, 450, 50)])
        ledger.post_transfer_reversal("reversal:mar", None, p, "USD", 200)
    ledger.post_charge("charge:other-currency", 3, "EUR", 1000, shares)
    assert ledger.provider_monthly(p, "USD") == [
        {"month": dt.date(2026, 1, 1), "sales": 1000, "fees": 100, "net": 900, "transferred": 0},
        {"month": dt.date(2026, 2, 1), "sales": 1000, "fees": 100, "net": 900, "transferred": 1200},
        {"month": dt.date(2026, 3, 1), "sales": -500, "fees": -50, "net": -450, "transferred": -200},
    ]
    assert ledger.provider_monthly(providers[0], "USD") == []


# ---- manual payouts ------------------------------------------------------------------------
@pytest.fixture
def payout_world(providers):
    default, ten, free, _ = providers
    Organization.objects.filter(pk=ten.pk).update(stripe_account_id="acct_123")  # paid through Connect
    Organization.objects.filter(pk=free.pk).update(name="=HYPERLINK(\"x\")")
    for p in (default, ten, free):
        ledger.post_charge(f"charge:{p.pk}", 1, "KWD", 1001, ledger.shares_for(1001, [(p, 1, 1001)]))
    ledger.post_charge("charge:jpy", 2, "JPY", 1000, ledger.shares_for(1000, [(default, 2, 1000)]))
    ledger.post_refund("refund:free", 1, "KWD", [(free, 1, 2, 0)])  # after its transfer, partly reversed:
    ledger.post_reversal_shortfall("shortfall:free", None, free, "KWD", 1)  # it owes 0.001
    return providers


@pytest.mark.django_db
def test_payout_rows_list_providers_off_connect_with_something_to_pay(payout_world):
    default, _, free, _ = payout_world
    rows = ledger.payout_rows("KWD")
    assert [(r.provider_id, r.amount_minor) for r in rows] == [(default.pk, 851), (free.pk, 999)]
    parsed = list(csv.reader(io.StringIO(ledger.payout_csv(rows))))
    assert parsed[0] == ["provider_id", "provider_name", "currency", "amount", "reference"]
    assert parsed[1][:4] == [str(default.pk), "Provider 0", "KWD", "0.851"]
    assert parsed[2][:4] == [str(free.pk), "'=HYPERLINK(\"x\")", "KWD", "0.999"]
    assert ledger.payout_rows("KWD") == rows  # same state, same references
    ledger.post_transfer(rows[0].reference, None, default, "KWD", rows[0].amount_minor)
    assert [r.provider_id for r in ledger.payout_rows("KWD")] == [free.pk]


@pytest.mark.django_db
def test_the_payout_command_writes_the_csv(payout_world, tmp_path):
    out = io.StringIO()
    call_command("ledger_payout_csv", "--currency", "jpy", stdout=out)
    assert out.getvalue().splitlines()[1].split(",")[2:4] == ["JPY", "850"]
    target = tmp_path / "kwd.csv"
    call_command("ledger_payout_csv", "--currency", "KWD", "--output", str(target))
    assert len(target.read_text().splitlines()) == 3


# ---- admin ---------------------------------------------------------------------------------
@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
def test_the_admin_shows_the_ledger_read_only(admin_client, payout_world):
    for name in ["ledgeraccount", "ledgertransaction", "ledgerentry"]:
        response = admin_client.get(reverse(f"admin:ledger_{name}_changelist"))
        assert response.status_code == 200, name
        assert admin_client.get(reverse(f"admin:ledger_{name}_add")).status_code == 403
    txn = LedgerTransaction.objects.get(reference="charge:jpy")
    page = admin_client.get(reverse("admin:ledger_ledgertransaction_change", args=[txn.pk]))
    assert page.status_code == 200 and b"850" in page.content
    assert admin_client.post(reverse("admin:ledger_ledgertransaction_change", args=[txn.pk]),
                             {"memo": "edited"}).status_code == 403
    assert admin_client.post(reverse("admin:ledger_ledgertransaction_delete", args=[txn.pk]),
                             {"post": "yes"}).status_code == 403
    accounts = admin_client.get(reverse("admin:ledger_ledgeraccount_changelist"),
                                {"kind__exact": "cash", "currency": "KWD"})
    assert b"3.001" in accounts.content  # three charges of 1.001 less a refund of 0.002
    filtered = admin_client.get(reverse("admin:ledger_ledgerentry_changelist"),
                                {"account__provider__id__exact": payout_world[0].pk, "currency": "JPY"})
    assert filtered.status_code == 200


@pytest.mark.django_db
def test_the_admin_downloads_the_payout_csv_for_the_selected_accounts(admin_client, payout_world):
    default = payout_world[0]
    ids = list(LedgerAccount.objects.filter(kind="provider_payable").values_list("pk", flat=True))
    response = admin_client.post(reverse("admin:ledger_ledgeraccount_changelist"),
                                 {"action": "export_payout_csv", "_selected_action": ids})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["currency"], r["amount"]) for r in rows] == [("JPY", "850"), ("KWD", "0.851"), ("KWD", "0.999")]
    assert rows[0]["provider_id"] == str(default.pk)
    event = AuditEvent.objects.get(action="ledger.payout_export")
    assert event.detail["rows"] == 3


def test_nothing_in_the_ledger_admin_can_delete():
    from django.contrib import admin
    from django.test import RequestFactory

    from marketplace.models import User

    request = RequestFactory().get("/")
    request.user = User(is_superuser=True, is_staff=True, is_active=True)
    for model in (LedgerAccount, LedgerTransaction, LedgerEntry):
        model_admin = admin.site._registry[model]
        assert not model_admin.has_delete_permission(request)
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)


def test_connection_is_postgresql():
    assert connection.vendor == "postgresql"
