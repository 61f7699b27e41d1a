from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workspaces', '0005_fingerprint_nifti'),
    ]

    operations = [
        migrations.AddField(
            model_name='deliveryfile',
            name='crc32',
            field=models.BigIntegerField(blank=True, null=True),
        ),
    ]
