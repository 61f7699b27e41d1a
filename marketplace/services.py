"""Writes for accounts, organizations and the audit trail."""
from __future__ import annotations

import json
import logging
from typing import Any

from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from marketplace.audit import CHAIN_LOCK_KEY, GENESIS, event_hash
from marketplace.exceptions import ApplicationError
from marketplace.models import AuditEvent, Membership, Notification, Organization, User

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


@transaction.atomic
def user_sign_up(
    *,
    username: str,
    email: str,
    password: str,
    organization_name: str,
    organization_kind: str,
    ip: str | None = None,
) -> User:
    """Create a user and the organization they own (a provider starts unapproved)."""
    if Organization.objects.filter(name__iexact=organization_name).exists():
        raise ApplicationError("An organization with this name already exists; ask its owner to add you.",
                               code="organization_exists")
    user = User.objects.create_user(username=username, email=email, password=password)
    org = Organization.objects.create(name=organization_name, kind=organization_kind)
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    audit_record(actor=user, action="user.sign_up", obj=user, ip=ip,
                 detail={"organization_id": org.pk, "kind": organization_kind})
    return user


@transaction.atomic
def organization_approve(*, organization: Organization, acting_user: User, ip: str | None = None) -> Organization:
    """Admin approval: an approved provider may publish datasets. Idempotent."""
    org = Organization.objects.select_for_update().get(pk=organization.pk)
    if org.approved_at is None:
        org.approved_at = timezone.now()
        org.approved_by = acting_user
        org.save(update_fields=["approved_at", "approved_by"])
        audit_record(actor=acting_user, action="organization.approve", obj=org, ip=ip)
    return org


@transaction.atomic
def membership_add(
    *, organization: Organization, email: str, role: str, acting_user: User, ip: str | None = None
) -> Membership:
    """An owner adds an existing user (by email) to the organization, or changes their role."""
    if not Membership.objects.filter(organization=organization, user=acting_user,
                                     role=Membership.Role.OWNER).exists():
        raise ApplicationError("Only an owner can add members.", code="not_owner")
    if role not in Membership.Role.values:
        raise ApplicationError(f"Unknown role {role!r}.", code="bad_role")
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise ApplicationError("No account uses this email; ask the person to sign up first.", code="no_such_user")
    if user == acting_user and role != Membership.Role.OWNER:
        raise ApplicationError("You cannot remove your own owner role.", code="last_owner")
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user=user, defaults={"role": role})
    audit_record(actor=acting_user, action="membership.add", obj=organization, ip=ip,
                 detail={"user_id": user.pk, "role": role})
    return membership


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
