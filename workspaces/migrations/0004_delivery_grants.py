"""Deliveries are reached through per-object grants: existing ones whose order still has
access are granted to their buyer (view and download), as new ones are when created."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMS = ("view_delivery", "download_delivery")


def grant_existing(apps, schema_editor):
    alias = schema_editor.connection.alias
    # Permission rows are normally made after all migrations; this one needs them now.
    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0, using=alias)
        config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    UserObjectPermission = apps.get_model("guardian", "UserObjectPermission")
    Delivery = apps.get_model("workspaces", "Delivery")
    OrderLine = apps.get_model("orders", "OrderLine")
    content_type = ContentType.objects.db_manager(alias).get_for_model(Delivery)
    perms = list(Permission.objects.using(alias).filter(content_type=content_type, codename__in=PERMS))
    live_orders = set(OrderLine.objects.using(alias).filter(access_ended_at__isnull=True)
                      .values_list("order_id", flat=True))
    for delivery_id, user_id, order_id in Delivery.objects.using(alias).values_list("pk", "user_id", "order_id"):
        if order_id not in live_orders:
            continue
        for perm in perms:
            UserObjectPermission.objects.using(alias).get_or_create(
                user_id=user_id, permission=perm, content_type=content_type, object_pk=str(delivery_id))


class Migration(migrations.Migration):
    dependencies = [
        ("workspaces", "0003_delivery_certificate_issued"),
        ("orders", "0005_signature"),
        ("guardian", "0003_remove_groupobjectpermission_guardian_gr_content_ae6aec_idx_and_more"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [
        migrations.AlterModelOptions(
            name="delivery",
            options={"ordering": ["-created", "-id"],
                     "permissions": [("download_delivery", "Can download the delivered files")],
                     "verbose_name_plural": "deliveries"},
        ),
        migrations.RunPython(grant_existing, migrations.RunPython.noop),
    ]
