"""What workspaces does when marketplace or orders tell it something.

Someone leaving a buyer organization loses the data that organization licensed: the
organization is the licensee, its members the named users.

orders does not import workspaces: it sends the signals of orders/signals.py from inside
its transactions, and the delivery follows here, in the same transaction (a failure here
rolls the order's change back). The copy itself is queued after commit by delivery_create.
"""
from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from marketplace.models import Membership
from orders.signals import lines_access_ended, order_access_stopped, order_released
from workspaces import grants, services


@receiver(post_delete, sender=Membership, dispatch_uid="workspaces.member_left_revoke")
def membership_removed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    grants.member_left_revoke(user_id=instance.user_id, organization_id=instance.organization_id)


@receiver(order_released, dispatch_uid="workspaces.delivery_create")
def order_released_deliver(sender: Any, order: Any, acting_user: Any = None, **kwargs: Any) -> None:
    services.delivery_create(order=order, acting_user=acting_user)


@receiver(order_access_stopped, dispatch_uid="workspaces.delivery_stop")
def order_access_stopped_end_delivery(sender: Any, order: Any, reason: str, acting_user: Any = None,
                                      **kwargs: Any) -> None:
    # A copy still running stops, and the grants go: no page or link of it opens again.
    services.delivery_stop(order=order, reason=reason)
    grants.delivery_grants_end(order=order, reason=reason, acting_user=acting_user)


@receiver(lines_access_ended, dispatch_uid="workspaces.delivery_remove_lines")
def lines_access_ended_remove_files(sender: Any, order: Any, line_ids: list[int], reason: str,
                                    **kwargs: Any) -> int:
    return services.delivery_remove_lines(order=order, line_ids=line_ids, reason=reason)
