"""The database itself keeps the ledger's rules, whatever client writes to it: raw SQL as the
owner role (the test connection), and the app role's own connection."""
from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from psycopg2 import errors

from orders.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from orders.ledger.services import ProviderShare, account_for, post_charge

from .conftest import check_now

pytestmark = pytest.mark.django_db


@pytest.fixture
def posted(provider):
    return post_charge("charge:pi_db", 7, "USD", 1000, [ProviderShare(provider.pk, 1, 1000, 150)])


def _insert(cursor, reference: str, entries: list[tuple[int, int, str]], currency: str = "USD") -> int:  # noqa: ANN001
    cursor.execute("INSERT INTO ledger_ledgertransaction (kind, reference, currency, memo, created) "
                   "VALUES ('adjustment', %s, %s, '', now()) RETURNING id", [reference, currency])
    txn_id = cursor.fetchone()[0]
    for account_id, amount, entry_currency in entries:
        cursor.execute("INSERT INTO ledger_ledgerentry (transaction_id, account_id, amount_minor, currency) "
                       "VALUES (%s, %s, %s, %s)", [txn_id, account_id, amount, entry_currency])
    return txn_id


@pytest.mark.parametrize("sql", [
    "UPDATE ledger_ledgerentry SET amount_minor = amount_minor * 2",
    "DELETE FROM ledger_ledgerentry",
    "UPDATE ledger_ledgertransaction SET memo = 'edited'",
    "DELETE FROM ledger_ledgertransaction",
    "UPDATE ledger_ledgeraccount SET provider_id = NULL",
    "DELETE FROM ledger_ledgeraccount",
])
def test_raw_updates_and_deletes_are_refused_by_the_database(posted, sql):
    with pytest.raises(DatabaseError, match="the ledger is append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert LedgerEntry.objects.filter(transaction=posted).count() == 3


def test_the_orm_cannot_edit_or_delete_either(posted):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LedgerTransaction.objects.filter(pk=posted.pk).update(memo="x")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        posted.entries.first().delete()


def test_a_transaction_inserted_entry_by_entry_and_balanced_is_accepted(provider):
    cash, revenue = account_for("cash", "USD"), account_for("platform_revenue", "USD", provider)
    with transaction.atomic(), connection.cursor() as cursor:
        _insert(cursor, "adj:ok", [(cash.pk, 500, "USD"), (revenue.pk, -300, "USD"), (revenue.pk, -200, "USD")])
        check_now()
    assert LedgerTransaction.objects.get(reference="adj:ok").entries.count() == 3


@pytest.mark.parametrize("entries, message", [
    ([("cash", 500, "USD"), ("revenue", -499, "USD")], "unbalanced: its entries sum to 1"),
    ([("cash", 500, "USD")], "has 1 entries"),
    ([], "has 0 entries"),
    ([("cash", 500, "USD"), ("revenue", -500, "EUR")], "not in its currency"),
    ([("cash", 500, "USD"), ("eur_revenue", -500, "USD")], "not in its currency"),
])
def test_an_unbalanced_or_mixed_currency_transaction_is_refused_at_commit(provider, entries, message):
    accounts = {"cash": account_for("cash", "USD"), "revenue": account_for("platform_revenue", "USD", provider),
                "eur_revenue": account_for("platform_revenue", "EUR", provider)}
    with pytest.raises(IntegrityError, match=message):
        with transaction.atomic(), connection.cursor() as cursor:
            _insert(cursor, "adj:bad", [(accounts[name].pk, amount, cur) for name, amount, cur in entries])
            check_now()
    assert not LedgerTransaction.objects.filter(reference="adj:bad").exists()


def test_an_entry_of_zero_is_refused_at_once(provider):
    cash = account_for("cash", "USD")
    with pytest.raises(IntegrityError, match="ledger_entry_amount_not_zero"):
        with transaction.atomic(), connection.cursor() as cursor:
            _insert(cursor, "adj:zero", [(cash.pk, 0, "USD")])


def test_an_account_of_the_wrong_shape_is_refused(provider):
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.create(kind="provider_payable", provider=None, currency="USD")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.create(kind="cash", provider=provider, currency="USD")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.create(kind="cash", currency="usd")
    account_for("cash", "USD")
    with pytest.raises(IntegrityError), transaction.atomic():  # one platform account per kind and currency
        LedgerAccount.objects.create(kind="cash", provider=None, currency="USD")


@pytest.mark.django_db(transaction=True)
def test_a_real_commit_of_an_unbalanced_transaction_fails_and_leaves_nothing(provider):
    cash, revenue = account_for("cash", "USD"), account_for("platform_revenue", "USD", provider)
    with pytest.raises(IntegrityError, match="unbalanced"):
        with transaction.atomic(), connection.cursor() as cursor:
            _insert(cursor, "adj:commit", [(cash.pk, 500, "USD"), (revenue.pk, -400, "USD")])
    assert not LedgerTransaction.objects.filter(reference="adj:commit").exists()
    with transaction.atomic(), connection.cursor() as cursor:
        _insert(cursor, "adj:commit-ok", [(cash.pk, 500, "USD"), (revenue.pk, -500, "USD")])
    assert LedgerTransaction.objects.filter(reference="adj:commit-ok").exists()


# ---- the app role (see tests/marketplace/test_database_roles.py) ---------------------------
LEDGER_TABLES = ["ledger_ledgeraccount", "ledger_ledgertransaction", "ledger_ledgerentry"]


@pytest.fixture
def app_cursor(django_db_setup, django_db_blocker) -> Iterator[psycopg2.extensions.cursor]:  # noqa: ANN001
    db = settings.DATABASES["default"]
    if not settings.DATABASE_APP_ROLE or settings.DATABASE_APP_ROLE == db["USER"]:
        pytest.skip("no separate app role: set DATABASE_APP_ROLE to a role that is not the test user")
    conn = psycopg2.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=settings.DATABASE_APP_ROLE,
                            password=db.get("PASSWORD") or None)
    conn.autocommit = True
    cursor = conn.cursor()
    cursor.execute("SET lock_timeout = '5s'")
    try:
        yield cursor
    finally:
        conn.close()


def _attempt(cursor, sql: str) -> None:  # noqa: ANN001
    cursor.execute("BEGIN")
    try:
        cursor.execute(sql)
    finally:
        cursor.execute("ROLLBACK")


@pytest.mark.parametrize("sql", [
    *(f"UPDATE {t} SET id = id" for t in LEDGER_TABLES),
    *(f"DELETE FROM {t}" for t in LEDGER_TABLES),
    *(f"TRUNCATE {t}" for t in LEDGER_TABLES),
    "DROP TRIGGER ledger_ledgerentry_append_only ON ledger_ledgerentry",
    "DROP TRIGGER ledger_ledgerentry_balanced ON ledger_ledgerentry",
    "ALTER TABLE ledger_ledgerentry DISABLE TRIGGER ALL",
    "ALTER TABLE ledger_ledgerentry DROP CONSTRAINT ledger_entry_amount_not_zero",
    "DROP FUNCTION ledger_check_balanced() CASCADE",
    "SET session_replication_role = replica",
])
def test_the_app_role_cannot_rewrite_the_ledger_or_drop_its_rules(app_cursor, sql):
    with pytest.raises(errors.InsufficientPrivilege):
        _attempt(app_cursor, sql)


def test_the_app_role_reads_and_appends_balanced_transactions_only(app_cursor):
    app_cursor.execute("BEGIN")
    try:
        app_cursor.execute("INSERT INTO ledger_ledgeraccount (kind, currency, created) VALUES "
                           "('cash', 'XTS', now()), ('stripe_fees', 'XTS', now()) RETURNING id")
        cash, fees = (row[0] for row in app_cursor.fetchall())
        _insert(app_cursor, "adj:app", [(fees, 5, "XTS"), (cash, -4, "XTS")], currency="XTS")
        with pytest.raises(errors.CheckViolation, match="unbalanced"):
            app_cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    finally:
        app_cursor.execute("ROLLBACK")


def test_the_owner_granted_the_app_role_select_and_insert_only_on_the_ledger():
    with connection.cursor() as cursor:
        for table in LEDGER_TABLES:
            cursor.execute("SELECT privilege_type FROM information_schema.role_table_grants "
                           "WHERE table_name = %s AND grantee = %s ORDER BY 1", [table, settings.DATABASE_APP_ROLE])
            assert [r[0] for r in cursor.fetchall()] == ["INSERT", "SELECT"], table
