"""Structured licence terms on each dataset (filled by 0014 from the licence type)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0012_dataset_pricing_plan'),
    ]

    operations = [
        migrations.AddField(
            model_name='dataset',
            name='licence_terms',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
