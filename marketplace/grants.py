"""Per-object grants (django-guardian): who may do what to one dataset or one delivery.

Grants go to users (a buyer's delivery) or to an organization's group (every member of a
provider manages its datasets), so "who may do what to this object" is one query, and the
admin's "Object permissions" page shows the same rows.

Access helpers ask through `objects_granted`, which ignores superuser status and model-wide
permissions on purpose: a staff flag is not a grant to download a buyer's data.
"""
from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import models
from guardian.shortcuts import assign_perm, get_groups_with_perms, get_objects_for_user, get_users_with_perms, remove_perm

from marketplace.models import Organization, User
from marketplace.services import audit_record

ORGANIZATION_GROUP_PREFIX = "organization:"


def organization_group(organization_id: int) -> Group:
    """The group holding every member of one organization (kept in step by the receivers;
    not a staff power, so the user admin neither shows nor edits it)."""
    group, _ = Group.objects.get_or_create(name=f"{ORGANIZATION_GROUP_PREFIX}{organization_id}")
    return group


def organization_groups_resync(user: User) -> None:
    """Put the user back in exactly their organizations' groups (after a form replaced the groups)."""
    from marketplace.models import Membership

    wanted = {organization_group(org_id) for org_id in
              Membership.objects.filter(user=user).values_list("organization_id", flat=True)}
    current = set(user.groups.filter(name__startswith=ORGANIZATION_GROUP_PREFIX))
    user.groups.remove(*(current - wanted))
    user.groups.add(*(wanted - current))


def membership_sync(*, user: User, organization_id: int, member: bool) -> None:
    group = organization_group(organization_id)
    if member:
        user.groups.add(group)
    else:
        user.groups.remove(group)


def grant(perms: list[str], obj: models.Model, *, to: User | Group, acting_user: User | None = None) -> None:
    """Give perms on obj to a user or group; audited (a permission change)."""
    for perm in perms:
        assign_perm(perm, to, obj)
    audit_record(actor=acting_user, action="grant.add", obj=obj, detail=_holder(to) | {"perms": sorted(perms)})


def grants_remove_all(obj: models.Model, perms: list[str], *, acting_user: User | None = None,
                      reason: str = "") -> int:
    """Take these permissions on obj from every user and group holding them (audited);
    returns how many went."""
    removed = 0
    holders = [*get_users_with_perms(obj, attach_perms=True, with_group_users=False).items(),
               *get_groups_with_perms(obj, attach_perms=True).items()]
    for holder, held in holders:
        for perm in perms:
            if perm.split(".", 1)[-1] in held:
                remove_perm(perm, holder, obj)
                removed += 1
                audit_record(actor=acting_user, action="grant.remove", obj=obj,
                             detail=_holder(holder) | {"perms": [perm], "reason": reason[:300]})
    return removed


def _holder(holder: User | Group) -> dict[str, object]:
    return {"group": holder.name} if isinstance(holder, Group) else {"user_id": holder.pk}


def objects_granted(user: User, perm: str, queryset: models.QuerySet) -> models.QuerySet:
    """The objects of queryset on which user holds perm through a user or group grant."""
    if not user.is_authenticated:
        return queryset.none()
    return get_objects_for_user(user, perm, klass=queryset, with_superuser=False, accept_global_perms=False)


def who_may(obj: models.Model) -> dict[str, list[str]]:
    """{"user alice@example.org": ["download_delivery", ...], "organization Acme": [...]} for one object."""
    rows: dict[str, list[str]] = {}
    for user, perms in get_users_with_perms(obj, attach_perms=True, with_group_users=False).items():
        rows[f"user {user.email or user.username}"] = sorted(perms)
    for group, perms in get_groups_with_perms(obj, attach_perms=True).items():
        label = group.name
        if group.name.startswith(ORGANIZATION_GROUP_PREFIX):
            org = Organization.objects.filter(pk=group.name.split(":", 1)[1]).first()
            label = f"organization {org.name}" if org else group.name
        rows[label] = sorted(perms)
    return rows
