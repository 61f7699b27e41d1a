"""At most one active agreement template, enforced by the database."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("orders", "0007_fill_contract_hashes_line_terms"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="duatemplate",
            constraint=models.UniqueConstraint(condition=models.Q(("is_active", True)), fields=("is_active",),
                                               name="one_active_dua_template"),
        ),
    ]
