"""Buyer vetting: an admin verifies a buyer organization (who it is, its sector, country and
contact) before its members may check out, or rejects it with a reason its members are
told. Verification reuses the provider approval fields (approved_at, approved_by).

Browsing and carts stay open to everyone signed in; checkout and free samples call
``buyer_checkout_require``, which also refuses organizations in settings.BLOCKED_COUNTRIES
and leaves that attempt in the audit trail."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from marketplace.countries import country_name
from marketplace.exceptions import ApplicationError, PermissionDeniedError
from marketplace.models import Membership, Organization, User
from marketplace.services import audit_record, notification_send

logger = logging.getLogger(__name__)

MAX_REJECTION_REASON = 2000


class BuyerNotVerifiedError(PermissionDeniedError):
    code = "buyer_not_verified"


class CountryBlockedError(PermissionDeniedError):
    code = "country_blocked"


@dataclass(frozen=True)
class OrderingRefusal:
    """Why the user may not check out now, in words safe to show them."""

    code: str
    message: str


def buyer_organization_for(user: User) -> Organization | None:
    """The buyer organization the user orders for: the first one they joined (the same
    rule as orders.quotes.buyer_organization, which prices for it)."""
    if not user.is_authenticated:
        return None
    return (Organization.objects.filter(kind=Organization.Kind.BUYER, memberships__user=user)
            .order_by("memberships__created", "pk").first())


def organization_page_url() -> str:
    return f"{settings.SITE_URL.rstrip('/')}{reverse('organization_members')}"


def ordering_refusal(*, user: User, organization: Organization | None = None) -> OrderingRefusal | None:
    """None when the user may check out; otherwise why not and what to do. A read: the
    cart page shows it before the buyer fills the checkout form."""
    org = organization if organization is not None else buyer_organization_for(user)
    how = ("On the Organization page, create your buyer organization or ask its owner to invite you, "
           "with its sector, country and a contact; an administrator verifies it, and you are notified.")
    if org is None:
        return OrderingRefusal("buyer_not_verified", "Checking out needs a verified buyer organization. " + how)
    if org.approved_at is None:
        if org.rejected_at is not None:
            return OrderingRefusal("buyer_not_verified", (
                f"{org.name} is not verified: an administrator declined to verify it "
                f"({org.rejection_reason}). Correct its details on the Organization page; it is then "
                f"reviewed again."))
        return OrderingRefusal("buyer_not_verified", (
            f"{org.name} is not verified yet, so it cannot check out. An administrator verifies buyer "
            f"organizations before they order: make sure its sector, country and contact are filled in "
            f"on the Organization page; you are notified once it is verified."))
    if org.country and org.country.upper() in settings.BLOCKED_COUNTRIES:
        return OrderingRefusal("country_blocked", (
            f"Orders cannot be placed for organizations in {country_name(org.country)} "
            f"({org.country.upper()}): the marketplace does not deliver data there."))
    return None


def buyer_checkout_require(*, user: User, ip: str | None = None, what: str = "checkout") -> Organization:
    """The user's verified buyer organization, or an expected error saying why they may not
    order. Call it outside the order's transaction: a refusal for a blocked country is
    audited, and that record must outlive the refused checkout."""
    org = buyer_organization_for(user)
    refusal = ordering_refusal(user=user, organization=org)
    if refusal is None:
        return org
    if refusal.code == "country_blocked":
        audit_record(actor=user, action="order.refused_country", obj=org, ip=ip,
                     detail={"country": org.country.upper(), "what": what})
        raise CountryBlockedError(refusal.message)
    raise BuyerNotVerifiedError(refusal.message)


def _members_notify(org: Organization, message: str) -> None:
    url = organization_page_url()
    members = list(User.objects.filter(memberships__organization=org, is_active=True))
    transaction.on_commit(lambda: [notification_send(user=member, message=message, url=url) for member in members])


def _buyer_locked(organization: Organization) -> Organization:
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if org.kind != Organization.Kind.BUYER:
        raise ApplicationError("Only buyer organizations are verified; providers are approved.", code="not_buyer")
    return org


@transaction.atomic
def organization_buyer_verify(*, organization: Organization, acting_user: User,
                              ip: str | None = None) -> Organization:
    """An admin verified who the buyer organization is: its members may check out. Audited;
    the members are told. Idempotent (a second verification changes and tells nothing)."""
    org = _buyer_locked(organization)
    if org.approved_at is not None:
        return org
    org.approved_at, org.approved_by = timezone.now(), acting_user
    org.rejected_at, org.rejection_reason = None, ""
    org.save(update_fields=["approved_at", "approved_by", "rejected_at", "rejection_reason"])
    audit_record(actor=acting_user, action="organization.buyer_verify", obj=org, ip=ip,
                 detail={"sector": org.sector, "country": org.country})
    _members_notify(org, f"{org.name} is verified: its members can now place orders.")
    return org


@transaction.atomic
def organization_buyer_reject(*, organization: Organization, acting_user: User, reason: str,
                              ip: str | None = None) -> Organization:
    """An admin declines to verify a buyer organization (or withdraws a verification), with a
    reason the members are told. Its members cannot check out until it is verified."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("Give a reason when rejecting an organization; its members are told.",
                               code="reason_required")
    if len(reason) > MAX_REJECTION_REASON:
        raise ApplicationError(f"The reason is longer than {MAX_REJECTION_REASON} characters.", code="reason_long")
    org = _buyer_locked(organization)
    was_verified = org.approved_at is not None
    org.approved_at, org.approved_by = None, None
    org.rejected_at, org.rejection_reason = timezone.now(), reason
    org.save(update_fields=["approved_at", "approved_by", "rejected_at", "rejection_reason"])
    audit_record(actor=acting_user, action="organization.buyer_reject", obj=org, ip=ip,
                 detail={"reason": reason, "was_verified": was_verified})
    _members_notify(org, f"{org.name} was not verified: {reason}")
    return org


@transaction.atomic
def organization_provider_reject(*, organization: Organization, acting_user: User, reason: str,
                                 ip: str | None = None) -> Organization:
    """An admin declines to approve a provider organization, with a reason its members read
    on the provider dashboard and in a notice. Correcting the organization's details asks
    for a new review (organization_details_update). An approved provider is not rejected
    here: its published datasets would stay on sale."""
    reason = _reason_clean(reason, "Give a reason when rejecting a provider; its members are told.")
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if org.kind != Organization.Kind.PROVIDER:
        raise ApplicationError("Only provider organizations are approved; buyers are verified.", code="not_provider")
    if org.approved_at is not None:
        raise ApplicationError(f"{org.name} is approved already; return its datasets to draft first if it must stop.",
                               code="provider_approved")
    org.rejected_at, org.rejection_reason = timezone.now(), reason
    org.save(update_fields=["rejected_at", "rejection_reason"])
    audit_record(actor=acting_user, action="organization.provider_reject", obj=org, ip=ip, detail={"reason": reason})
    _members_notify(org, f"{org.name} was not approved as a provider: {reason} "
                         f"Correct its details on the Organization page; it is then reviewed again.")
    return org


def _reason_clean(reason: str, missing: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(missing, code="reason_required")
    if len(reason) > MAX_REJECTION_REASON:
        raise ApplicationError(f"The reason is longer than {MAX_REJECTION_REASON} characters.", code="reason_long")
    return reason


@transaction.atomic
def organization_details_update(*, organization: Organization, acting_user: User, sector: str, country: str,
                                contact_name: str, contact_email: str, ip: str | None = None) -> Organization:
    """An owner fills in or corrects the details an admin verifies. A verified buyer's
    details are frozen (the admin verified those): changing them is asked of an admin."""
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if not Membership.objects.filter(organization=org, user=acting_user, role=Membership.Role.OWNER).exists():
        raise PermissionDeniedError("Only an owner can change the organization's details.")
    if org.is_verified_buyer:
        raise ApplicationError(f"{org.name} is verified; ask an administrator to change its details.",
                               code="organization_verified")
    if sector and sector not in Organization.Sector.values:
        raise ApplicationError("Choose the organization's sector.", code="bad_sector")
    was_rejected = org.rejected_at is not None
    org.sector, org.country = sector, (country or "").upper()[:2]
    org.contact_name, org.contact_email = contact_name.strip()[:200], contact_email.strip()[:254]
    # Corrected after a rejection: the organization waits for a new review.
    org.rejected_at, org.rejection_reason = None, ""
    org.save(update_fields=["sector", "country", "contact_name", "contact_email", "rejected_at", "rejection_reason"])
    audit_record(actor=acting_user, action="organization.details_update", obj=org, ip=ip,
                 detail={"sector": org.sector, "country": org.country})
    if org.kind == Organization.Kind.BUYER:
        buyer_review_request(organization=org)
    elif was_rejected:
        provider_review_request(organization=org)
    return org


def provider_review_request(*, organization: Organization) -> None:
    """Tell the staff that a rejected provider corrected its details and waits again."""
    from marketplace.services import notify_staff

    url = f"{settings.SITE_URL.rstrip('/')}{reverse('admin:marketplace_organization_change', args=[organization.pk])}"
    message = f"Provider {organization.name} corrected its details and waits for approval."
    transaction.on_commit(lambda: notify_staff(message=message, url=url))


def buyer_review_request(*, organization: Organization) -> None:
    """Tell the staff who may verify that a buyer organization waits (after commit)."""
    from marketplace.services import notify_staff

    url = f"{settings.SITE_URL.rstrip('/')}{reverse('admin:marketplace_organization_change', args=[organization.pk])}"
    message = f"Buyer organization {organization.name} waits for verification."
    transaction.on_commit(lambda: notify_staff(message=message, url=url))
