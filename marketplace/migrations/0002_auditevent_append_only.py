"""Make the audit trail append-only in the database itself.

Row-level UPDATE and DELETE are refused for every client, the ORM and admin included.
TRUNCATE stays possible for the database owner (test database flushes use it).
"""
from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION marketplace_auditevent_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER marketplace_auditevent_append_only
    BEFORE UPDATE OR DELETE ON marketplace_auditevent
    FOR EACH ROW EXECUTE FUNCTION marketplace_auditevent_forbid_change();
"""
ALLOW = """
DROP TRIGGER IF EXISTS marketplace_auditevent_append_only ON marketplace_auditevent;
DROP FUNCTION IF EXISTS marketplace_auditevent_forbid_change();
"""


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]
    operations = [migrations.RunSQL(FORBID, ALLOW)]
