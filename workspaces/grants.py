"""Grants on deliveries: the buyer may see a delivery (view) and fetch its files (download).

A view-only licence gives view without download. When access ends (term over, revoked,
refunded, cancelled) every grant on the delivery is taken back, so the pages and links
that check them stop at once.
"""
from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from guardian.shortcuts import get_users_with_perms, remove_perm

from marketplace.exceptions import ApplicationError, PermissionDeniedError
from marketplace.grants import grant, grants_remove_all, objects_granted
from marketplace.models import User
from marketplace.services import audit_record
from orders.models import Order
from workspaces.models import Delivery

DELIVERY_VIEW = "workspaces.view_delivery"
DELIVERY_DOWNLOAD = "workspaces.download_delivery"
ALL_PERMS = [DELIVERY_VIEW, DELIVERY_DOWNLOAD]


def delivery_grant_buyer(delivery: Delivery, *, view_only: bool = False, acting_user: User | None = None) -> None:
    perms = [DELIVERY_VIEW] if view_only else ALL_PERMS
    grant(perms, delivery, to=delivery.user, acting_user=acting_user)


def delivery_grants_end(*, order: Order, reason: str, acting_user: User | None = None) -> int:
    """Take back every grant on the order's delivery; returns how many went (0 if none)."""
    delivery = Delivery.objects.filter(order=order).first()
    if delivery is None:
        return 0
    return grants_remove_all(delivery, ALL_PERMS, acting_user=acting_user, reason=reason)


def deliveries_visible_to(user: User) -> QuerySet[Delivery]:
    return objects_granted(user, DELIVERY_VIEW, Delivery.objects.all())


def deliveries_downloadable_by(user: User) -> QuerySet[Delivery]:
    return objects_granted(user, DELIVERY_DOWNLOAD, Delivery.objects.all())


# ---- named users: the buyer shares the delivery with colleagues, up to the licence's seats ----
class SeatsError(ApplicationError):
    code = "seats"


def delivery_seats(delivery: Delivery) -> int | None:
    """How many named users the order's licences allow (the smallest over its lines); None:
    the whole buyer organization."""
    seats = [(terms or {}).get("seats") for terms in delivery.order.lines.values_list("licence_terms", flat=True)]
    limits = [int(s) for s in seats if s]
    return min(limits) if limits else None


def delivery_named_users(delivery: Delivery) -> list[User]:
    """Everyone holding the view grant, the buyer first."""
    users = list(get_users_with_perms(delivery, only_with_perms_in=["view_delivery"], with_group_users=False))
    return sorted(users, key=lambda u: (u.pk != delivery.user_id, u.email))


@transaction.atomic
def delivery_share(*, delivery: Delivery, colleague_email: str, acting_user: User) -> User:
    """The buyer names a colleague of the ordering organization as a user of the data: the
    colleague gets the buyer's own grants (view-only stays view-only). Refused past the seats
    the licence allows, for anyone outside the organization, and for anyone but the buyer."""
    locked = Delivery.objects.select_for_update().select_related("order").get(pk=delivery.pk)
    if acting_user.pk != locked.user_id:
        raise PermissionDeniedError("Only the person who placed the order names its users.")
    org_id = locked.order.buyer_organization_id
    colleague = User.objects.filter(email__iexact=(colleague_email or "").strip(), is_active=True,
                                    memberships__organization_id=org_id).first() if org_id else None
    if colleague is None:
        # The same answer whether or not the address has an account: no probing for accounts.
        raise SeatsError("Name a colleague by the e-mail of their account in your organization.")
    named = delivery_named_users(locked)
    if colleague in named:
        return colleague
    seats = delivery_seats(locked)
    if seats is not None and len(named) >= seats:
        raise SeatsError(f"The licence allows {seats} named user{'s' if seats != 1 else ''}, and all are named.")
    perms = [p for p in ALL_PERMS if acting_user.has_perm(p, locked)]
    grant(perms, locked, to=colleague, acting_user=acting_user)
    return colleague


@transaction.atomic
def delivery_unshare(*, delivery: Delivery, colleague: User, acting_user: User) -> None:
    if acting_user.pk != delivery.user_id:
        raise PermissionDeniedError("Only the person who placed the order names its users.")
    if colleague.pk == delivery.user_id:
        raise SeatsError("The person who placed the order stays a named user.")
    for perm in ALL_PERMS:
        if colleague.has_perm(perm, delivery):
            remove_perm(perm, colleague, delivery)
    audit_record(actor=acting_user, action="grant.remove", obj=delivery,
                 detail={"user_id": colleague.pk, "perms": ALL_PERMS, "reason": "named user removed by the buyer"})


def member_left_revoke(*, user_id: int, organization_id: int) -> int:
    """Take a former member's grants on the deliveries their organization bought."""
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return 0
    removed = 0
    for delivery in deliveries_visible_to(user).filter(order__buyer_organization_id=organization_id):
        for perm in ALL_PERMS:
            if user.has_perm(perm, delivery):
                remove_perm(perm, user, delivery)
                removed += 1
        audit_record(actor=None, action="grant.remove", obj=delivery,
                     detail={"user_id": user.pk, "perms": ALL_PERMS, "reason": "left the buyer organization"})
    return removed
