"""The SHA-256 of each contract's text and each line's licence terms (filled by 0007); new
agreement templates start inactive (one is active at a time, 0008)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0005_signature'),
    ]

    operations = [
        migrations.AddField(
            model_name='contract',
            name='text_sha256',
            field=models.CharField(blank=True, max_length=64, verbose_name='SHA-256 of the text'),
        ),
        migrations.AddField(
            model_name='orderline',
            name='licence_terms',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='duatemplate',
            name='is_active',
            field=models.BooleanField(default=False),
        ),
    ]
