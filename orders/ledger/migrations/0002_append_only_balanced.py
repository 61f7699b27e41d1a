"""The ledger's rules, enforced by the database itself (run by the owner role, like the
audit trail's trigger).

1. Accounts, transactions and entries are append-only: row-level UPDATE and DELETE are
   refused for every client, the ORM and admin included. TRUNCATE stays possible for the
   owner (test database flushes use it); the app role is granted SELECT and INSERT only.
2. At commit (a constraint trigger, DEFERRABLE INITIALLY DEFERRED, so a transaction's rows
   may be inserted one by one), each ledger transaction has at least two entries, they sum
   to zero, and every entry and its account are in the transaction's currency.
3. An entry of 0 is refused at once (a CHECK constraint of migration 0001).
"""
from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION ledger_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_ledgeraccount_append_only
    BEFORE UPDATE OR DELETE ON ledger_ledgeraccount
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON ledger_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON ledger_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();

CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger AS $$
DECLARE
    txn_id bigint;
    txn_currency varchar;
    entry_count bigint;
    total numeric;
    foreign_count bigint;
BEGIN
    IF TG_TABLE_NAME = 'ledger_ledgerentry' THEN
        txn_id := NEW.transaction_id;
    ELSE
        txn_id := NEW.id;
    END IF;
    SELECT currency INTO txn_currency FROM ledger_ledgertransaction WHERE id = txn_id;
    SELECT count(*), coalesce(sum(e.amount_minor), 0),
           count(*) FILTER (WHERE e.currency <> txn_currency OR a.currency <> txn_currency)
      INTO entry_count, total, foreign_count
      FROM ledger_ledgerentry e JOIN ledger_ledgeraccount a ON a.id = e.account_id
     WHERE e.transaction_id = txn_id;
    IF entry_count < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries (at least 2 needed)', txn_id, entry_count
            USING ERRCODE = 'check_violation';
    END IF;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: its entries sum to %', txn_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    IF foreign_count > 0 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries not in its currency %', txn_id, foreign_count,
            txn_currency USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER ledger_ledgerentry_balanced
    AFTER INSERT ON ledger_ledgerentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
CREATE CONSTRAINT TRIGGER ledger_ledgertransaction_balanced
    AFTER INSERT ON ledger_ledgertransaction DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
"""
ALLOW = """
DROP TRIGGER IF EXISTS ledger_ledgertransaction_balanced ON ledger_ledgertransaction;
DROP TRIGGER IF EXISTS ledger_ledgerentry_balanced ON ledger_ledgerentry;
DROP FUNCTION IF EXISTS ledger_check_balanced();
DROP TRIGGER IF EXISTS ledger_ledgerentry_append_only ON ledger_ledgerentry;
DROP TRIGGER IF EXISTS ledger_ledgertransaction_append_only ON ledger_ledgertransaction;
DROP TRIGGER IF EXISTS ledger_ledgeraccount_append_only ON ledger_ledgeraccount;
DROP FUNCTION IF EXISTS ledger_forbid_change();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunSQL(FORBID, ALLOW)]
