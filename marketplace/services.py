"""Writes for accounts, organizations and the audit trail."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from marketplace.audit import CHAIN_LOCK_KEY, GENESIS, event_hash
from marketplace.exceptions import ApplicationError, NotFoundError
from marketplace.models import (
    AuditEvent,
    Invitation,
    Membership,
    Notification,
    Organization,
    User,
)

logger = logging.getLogger(__name__)


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


@transaction.atomic
def audit_record(
    *,
    actor: User | None,
    action: str,
    obj: models.Model | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event, chained by hash to the one before it. `detail` must hold ids
    and counts only, never PHI."""
    # Two concurrent inserts reading the same last hash would fork the chain: a transaction
    # lock serialises appenders until commit, so the last event read here is the one before
    # ours (a rolled-back event never becomes anyone's predecessor).
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
    prev = AuditEvent.objects.order_by("-id").values_list("chain_hash", flat=True).first() or GENESIS
    known = actor is not None and actor.is_authenticated
    event = AuditEvent(
        actor=actor if known else None,
        actor_label=actor.get_username() if known else "",
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        ip_address=AuditEvent._meta.get_field("ip_address").to_python(ip),  # as PostgreSQL gives it back
        # What the database will give back (jsonb): hash exactly what verification reads.
        detail=json.loads(json.dumps(detail or {})),
        created=timezone.now(),
        prev_hash=prev,
    )
    event.chain_hash = event_hash(event, prev)
    event.save(force_insert=True)
    return event


def login_fingerprint(login: str) -> str:
    """A keyed hash of a typed login (username or e-mail): failed logins are attacker-
    supplied text, so the audit trail keeps this instead, enough to group attempts."""
    normalized = login.strip().lower().encode("utf-8", "replace")
    return hmac.new(settings.SECRET_KEY.encode(), b"login:" + normalized, hashlib.sha256).hexdigest()[:24]


def user_terms_accept(*, user: User, version: str, ip: str | None = None) -> User:
    """Record that the user accepted the terms of use of this version (at sign-up)."""
    user.terms_version = version
    user.terms_accepted_at = timezone.now()
    user.save(update_fields=["terms_version", "terms_accepted_at"])
    audit_record(actor=user, action="user.terms_accept", obj=user, ip=ip, detail={"version": version})
    return user


def user_time_zone_set(*, user: User, time_zone: str) -> User:
    """The zone the account's pages show times in; "" follows the browser again."""
    from marketplace.timezones import valid_zone

    if time_zone and valid_zone(time_zone) is None:
        raise ApplicationError(f"{time_zone[:64]!r} is not a time zone name such as Europe/Berlin.")
    user.time_zone = time_zone
    user.save(update_fields=["time_zone"])
    return user


@transaction.atomic
def organization_create(
    *, name: str, kind: str, country: str = "", sector: str = "", contact_name: str = "", contact_email: str = "",
    acting_user: User, ip: str | None = None
) -> Organization:
    """The acting user creates an organization and becomes its owner (a provider starts
    unapproved, its owners must set up a second factor; a buyer starts unverified and the
    staff who verify are told)."""
    name = name.strip()
    if kind not in Organization.Kind.values:
        raise ApplicationError("Unknown organization kind.", code="bad_kind")
    if not name:
        raise ApplicationError("An organization needs a name.", code="bad_name")
    if Organization.objects.filter(name__iexact=name).exists():
        # Names are unique and shown on datasets; this tells a signed-in, verified user no
        # more than the catalog does.
        raise ApplicationError("Please choose another name for the organization.", code="organization_exists")
    if sector and sector not in Organization.Sector.values:
        raise ApplicationError("Unknown sector.", code="bad_sector")
    org = Organization.objects.create(name=name, kind=kind, country=country.upper()[:2], sector=sector,
                                      contact_name=contact_name.strip()[:200], contact_email=contact_email.strip())
    Membership.objects.create(user=acting_user, organization=org, role=Membership.Role.OWNER)
    audit_record(actor=acting_user, action="organization.create", obj=org, ip=ip, detail={"kind": kind})
    if kind == Organization.Kind.BUYER:
        from marketplace.vetting import buyer_review_request

        buyer_review_request(organization=org)
    return org


@transaction.atomic
def organization_approve(*, organization: Organization, acting_user: User, ip: str | None = None) -> Organization:
    """Admin approval: an approved provider may publish datasets. Idempotent."""
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if org.approved_at is None:
        org.approved_at = timezone.now()
        org.approved_by = acting_user
        org.rejected_at, org.rejection_reason = None, ""  # an approval answers an earlier refusal
        org.save(update_fields=["approved_at", "approved_by", "rejected_at", "rejection_reason"])
        audit_record(actor=acting_user, action="organization.approve", obj=org, ip=ip)
    return org


@transaction.atomic
def organization_verify_academic(*, organization: Organization, acting_user: User,
                                 ip: str | None = None) -> Organization:
    """An admin checked that a buyer organization is an academic institution: its members
    get the academic discounts providers offer. Idempotent."""
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if org.kind != Organization.Kind.BUYER:
        raise ApplicationError("Only buyer organizations are verified as academic.", code="not_buyer")
    if org.academic_verified_at is None:
        org.academic_verified_at = timezone.now()
        org.save(update_fields=["academic_verified_at"])
        audit_record(actor=acting_user, action="organization.verify_academic", obj=org, ip=ip)
    return org


INVITATION_SENT_MESSAGE = ("Invitation recorded. If {email} belongs to an account, its owner will see it "
                           "after signing in; otherwise they can sign up with that address and accept it.")


@transaction.atomic
def invitation_create(
    *, organization: Organization, email: str, role: str, acting_user: User, ip: str | None = None
) -> Invitation:
    """An owner invites an e-mail address. Answers alike whether or not an account uses the
    address (nothing here reveals which e-mails exist); the person accepts or declines."""
    if not Membership.objects.filter(organization=organization, user=acting_user,
                                     role=Membership.Role.OWNER).exists():
        raise ApplicationError("Only an owner can invite members.", code="not_owner")
    if role not in Membership.Role.values:
        raise ApplicationError("Unknown role.", code="bad_role")
    email = email.strip().lower()
    if not email or "@" not in email or "\x00" in email:
        raise ApplicationError("Enter an e-mail address.", code="bad_email")
    invitation = (Invitation.objects.select_for_update()
                  .filter(organization=organization, email__iexact=email,
                          accepted_at__isnull=True, declined_at__isnull=True).first())
    if invitation is None:
        invitation = Invitation.objects.create(organization=organization, email=email, role=role,
                                               invited_by=acting_user)
    elif invitation.role != role:
        invitation.role = role
        invitation.save(update_fields=["role"])
    audit_record(actor=acting_user, action="invitation.create", obj=organization, ip=ip,
                 detail={"invitation_id": invitation.pk, "role": role})
    invitation_id = invitation.pk
    transaction.on_commit(lambda: _invitation_send(invitation_id=invitation_id))
    return invitation


def _invitation_send(*, invitation_id: int) -> None:
    from django.core.mail import send_mail

    invitation = Invitation.objects.select_related("organization").filter(pk=invitation_id).first()
    if invitation is None:
        return
    message = f"You are invited to join {invitation.organization.name} as {invitation.get_role_display().lower()}."
    user = User.objects.filter(email__iexact=invitation.email).first()
    if user is not None:
        notification_send(user=user, message=message, url="/organization/")
        return
    try:
        send_mail(subject="MedImage Exchange: invitation", from_email=None, recipient_list=[invitation.email],
                  message=f"{message}\n\nSign up with this e-mail address, then accept it on the "
                          f"Organization page.", fail_silently=False)
    except Exception:  # noqa: BLE001 - mail is best effort; the invitation is stored
        logger.warning("invitation e-mail %s failed", invitation_id)


def _invitation_for_invitee(*, invitation_id: int, acting_user: User) -> Invitation:
    # One answer for "no such invitation", "not yours" and "already answered".
    from marketplace.selectors import invitations_for_user

    invitation = invitations_for_user(user=acting_user).select_for_update(of=("self",)).filter(
        pk=invitation_id).first()
    if invitation is None:
        raise NotFoundError("Invitation not found.")
    return invitation


@transaction.atomic
def invitation_accept(*, invitation_id: int, acting_user: User, ip: str | None = None) -> Membership:
    """The invitee (signed in, with the invited address verified) joins the organization.
    An existing owner stays owner."""
    invitation = _invitation_for_invitee(invitation_id=invitation_id, acting_user=acting_user)
    membership, created = Membership.objects.get_or_create(
        organization=invitation.organization, user=acting_user, defaults={"role": invitation.role})
    if not created and invitation.role == Membership.Role.OWNER and membership.role != Membership.Role.OWNER:
        membership.role = Membership.Role.OWNER
        membership.save(update_fields=["role"])
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(actor=acting_user, action="invitation.accept", obj=invitation.organization, ip=ip,
                 detail={"invitation_id": invitation.pk, "role": membership.role})
    return membership


@transaction.atomic
def invitation_decline(*, invitation_id: int, acting_user: User, ip: str | None = None) -> Invitation:
    invitation = _invitation_for_invitee(invitation_id=invitation_id, acting_user=acting_user)
    invitation.declined_at = timezone.now()
    invitation.save(update_fields=["declined_at"])
    audit_record(actor=acting_user, action="invitation.decline", obj=invitation.organization, ip=ip,
                 detail={"invitation_id": invitation.pk})
    return invitation


def notification_send(*, user: User, message: str, url: str = "") -> Notification:
    """In the app, and by e-mail through Django's mail backend (a failed mail server must
    not lose the in-app notice)."""
    from django.core.mail import send_mail

    notice = Notification.objects.create(user=user, message=message[:300], url=url[:500])
    if user.email:
        try:
            send_mail(subject=f"MedImage Exchange: {message[:80]}", message=f"{message}\n\n{url}",
                      from_email=None, recipient_list=[user.email], fail_silently=False)
        except Exception:  # noqa: BLE001 - mail is best effort; the notice is stored
            logger.warning("notification e-mail to user %s failed", user.pk)
    return notice


def notifications_mark_read(*, user: User) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())


def notify_staff(*, message: str, url: str = "") -> int:
    """Tell every active staff member who may change orders (superusers included)."""
    staff = User.objects.filter(is_active=True, is_staff=True)
    sent = 0
    for user in staff:
        if user.has_perm("orders.change_order"):
            notification_send(user=user, message=message, url=url)
            sent += 1
    return sent
