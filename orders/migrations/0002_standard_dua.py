"""Data migration: the standard data use agreement, version 1.0."""
from django.db import migrations

STANDARD_DUA = """STANDARD DATA USE AGREEMENT (version 1.0)

1. Purpose. The Recipient may use the Data only for research, development, validation
   and regulatory submission of software, including machine-learning models.
2. No re-identification. The Recipient shall not attempt to identify any individual whose
   images are in the Data, nor link the Data with other data to that end, and shall report
   any identifying information found in the Data to the marketplace within 72 hours.
3. Security. The Recipient shall keep the Data on access-controlled systems and share it
   only with its own staff and contractors bound by terms at least as protective.
4. No redistribution. The Recipient shall not sell, publish or redistribute the Data.
   Models trained on the Data are the Recipient's own.
5. Attribution. Publications using the Data acknowledge the provider as named in the
   dataset's licence.
6. Term. This agreement lasts for the licence term of the order; on its end the Recipient
   deletes the Data unless the licence says otherwise.
7. Audit. Downloads are logged; the provider and the marketplace may audit compliance.
"""


def create(apps, schema_editor):
    # On the connection migrate runs on (the owner role): the app role has no rights yet.
    DuaTemplate = apps.get_model("orders", "DuaTemplate")
    DuaTemplate.objects.using(schema_editor.connection.alias).get_or_create(
        version="1.0", defaults={"title": "Standard data use agreement", "text": STANDARD_DUA, "is_active": True})


def remove(apps, schema_editor):
    apps.get_model("orders", "DuaTemplate").objects.using(schema_editor.connection.alias).filter(
        version="1.0").delete()


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]
    operations = [migrations.RunPython(create, remove)]
