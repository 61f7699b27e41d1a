"""Someone leaving a buyer organization loses the data that organization licensed: the
organization is the licensee, its members the named users."""
from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from marketplace.models import Membership
from workspaces.grants import member_left_revoke


@receiver(post_delete, sender=Membership, dispatch_uid="workspaces.member_left_revoke")
def membership_removed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    member_left_revoke(user_id=instance.user_id, organization_id=instance.organization_id)
