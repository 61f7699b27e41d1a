"""Electronic signatures, append-only in the database like the audit trail: row-level
UPDATE and DELETE are refused for every client, the ORM and admin included. TRUNCATE
stays possible for the owner (test database flushes use it); the app role is granted
SELECT and INSERT only (marketplace/database.py APPEND_ONLY_TABLES)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FORBID = """
CREATE OR REPLACE FUNCTION orders_signature_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'signatures are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER orders_signature_append_only
    BEFORE UPDATE OR DELETE ON orders_signature
    FOR EACH ROW EXECUTE FUNCTION orders_signature_forbid_change();
"""
ALLOW = """
DROP TRIGGER IF EXISTS orders_signature_append_only ON orders_signature;
DROP FUNCTION IF EXISTS orders_signature_forbid_change();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0004_entitlements'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Signature',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('printed_name', models.CharField(max_length=300)),
                ('meaning', models.CharField(choices=[('authorship', 'Authorship'), ('approval', 'Approval'), ('responsibility', 'Responsibility')], max_length=16)),
                ('record_type', models.CharField(max_length=100)),
                ('record_id', models.CharField(max_length=64)),
                ('record_sha256', models.CharField(max_length=64, verbose_name='SHA-256 of the signed record')),
                ('factors', models.CharField(max_length=32)),
                ('signed_at', models.DateTimeField()),
                ('ip', models.GenericIPAddressField(blank=True, null=True)),
                ('signer', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='signatures', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['signed_at', 'id'],
                'indexes': [models.Index(fields=['record_type', 'record_id'], name='signature_record_idx')],
            },
        ),
        migrations.RunSQL(FORBID, ALLOW),
    ]
