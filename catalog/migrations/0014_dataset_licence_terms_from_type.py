"""Data migration: each dataset's structured licence terms, derived from its licence type as
it was sold until now: commercial allows commercial use, academic and free are research only;
no term (perpetual) and the whole buyer organization, except a paid subscription's yearly
term. The terms' shape is frozen here (catalog/licence.py holds the live vocabulary)."""
from django.db import migrations


def terms_from_licence_type(apps, schema_editor):  # noqa: ANN001, ANN201
    # The migrating connection (the owner's): another would wait on this transaction's locks.
    datasets = apps.get_model("catalog", "Dataset").objects.using(schema_editor.connection.alias)
    for row in list(datasets.filter(licence_terms={}).only("pk", "licence_type", "pricing_model")):
        yearly = row.pricing_model == "subscription" and row.licence_type != "free"
        terms = {
            "use": "commercial" if row.licence_type == "commercial" else "research",
            "term_months": 12 if yearly else None,
            "seats": None,
            "derivative_models": True,
            "publication": True,
            "territory": ["worldwide"],
            "access": "download",
            "redistribution": False,
        }
        datasets.filter(pk=row.pk).update(licence_terms=terms)


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0013_dataset_licence_terms"),
    ]

    operations = [
        migrations.RunPython(terms_from_licence_type, migrations.RunPython.noop),
    ]
