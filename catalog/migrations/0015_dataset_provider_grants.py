"""Existing datasets and memberships get the per-object grants new ones get at creation:
every member is in their organization's group, and the group manages the organization's datasets."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMS = ("change_dataset", "view_dataset")


def grant_existing(apps, schema_editor):
    alias = schema_editor.connection.alias
    # Permission rows are normally made after all migrations; make them now to point at them.
    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0, using=alias)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    GroupObjectPermission = apps.get_model("guardian", "GroupObjectPermission")
    Membership = apps.get_model("marketplace", "Membership")
    Dataset = apps.get_model("catalog", "Dataset")
    User = apps.get_model("marketplace", "User")

    def group_for(org_id):
        return Group.objects.using(alias).get_or_create(name=f"organization:{org_id}")[0]

    for membership in Membership.objects.using(alias).all():
        User.groups.through.objects.using(alias).get_or_create(
            user_id=membership.user_id, group_id=group_for(membership.organization_id).pk)
    content_type = ContentType.objects.db_manager(alias).get_for_model(Dataset)
    perms = list(Permission.objects.using(alias).filter(content_type=content_type, codename__in=PERMS))
    for dataset_id, provider_id in Dataset.objects.using(alias).values_list("pk", "provider_id"):
        group = group_for(provider_id)
        for perm in perms:
            GroupObjectPermission.objects.using(alias).get_or_create(
                group=group, permission=perm, content_type=content_type, object_pk=str(dataset_id))


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0014_dataset_licence_terms_from_type"),
        ("guardian", "0003_remove_groupobjectpermission_guardian_gr_content_ae6aec_idx_and_more"),
        ("marketplace", "0007_organization_money_fields"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(grant_existing, migrations.RunPython.noop)]
