"""Data migration: each contract's text SHA-256; each order line's licence terms as it was
sold (from its licence type: commercial allows commercial use, academic and free are research
only; a subscription line for a year, other lines perpetual, for the whole buyer
organization); and one active agreement template, the newest of those active."""
import hashlib

from django.db import migrations


def fill(apps, schema_editor):  # noqa: ANN001, ANN201
    # The migrating connection (the owner's): another would wait on this transaction's locks.
    alias = schema_editor.connection.alias
    contracts = apps.get_model("orders", "Contract").objects.using(alias)
    for row in list(contracts.filter(text_sha256="").only("pk", "text")):
        contracts.filter(pk=row.pk).update(text_sha256=hashlib.sha256(row.text.encode("utf-8")).hexdigest())
    lines = apps.get_model("orders", "OrderLine").objects.using(alias)
    for row in list(lines.filter(licence_terms={}).only("pk", "licence_type", "pricing_model")):
        lines.filter(pk=row.pk).update(licence_terms={
            "use": "commercial" if row.licence_type == "commercial" else "research",
            "term_months": 12 if row.pricing_model == "subscription" else None,
            "seats": None, "derivative_models": True, "publication": True, "territory": ["worldwide"],
            "access": "download", "redistribution": False,
        })
    templates = apps.get_model("orders", "DuaTemplate").objects.using(alias)
    newest = templates.filter(is_active=True).order_by("-created", "-pk").first()
    if newest is not None:
        templates.filter(is_active=True).exclude(pk=newest.pk).update(is_active=False)


class Migration(migrations.Migration):

    dependencies = [
        ("orders", "0006_contract_text_sha256_line_terms"),
    ]

    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
