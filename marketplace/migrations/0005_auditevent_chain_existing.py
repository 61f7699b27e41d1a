"""Chain the audit events recorded before the hash chain existed, in id order.

The append-only trigger refuses UPDATE, so it is switched off for this one transaction
(the owner role runs migrations; the app role could not do this).
"""
from django.db import migrations

from marketplace.audit import GENESIS, event_hash


def chain_existing(apps, schema_editor):  # noqa: ANN001, ANN201
    AuditEvent = apps.get_model("marketplace", "AuditEvent")
    table = AuditEvent._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER marketplace_auditevent_append_only")
        prev = GENESIS
        for event in AuditEvent.objects.using(schema_editor.connection.alias).order_by("id").iterator(
                chunk_size=2000):
            digest = event_hash(event, prev)
            cursor.execute(f"UPDATE {table} SET prev_hash = %s, chain_hash = %s WHERE id = %s",
                           [prev, digest, event.pk])
            prev = digest
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER marketplace_auditevent_append_only")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0004_auditevent_chain")]
    operations = [migrations.RunPython(chain_existing, migrations.RunPython.noop)]
