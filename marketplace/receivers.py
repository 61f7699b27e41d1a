"""Audit every login and every failed login, whichever form or API it came through, and
keep organization groups in step with memberships.

Receivers only call the audit service. Failed logins store the account id when the typed
login names an account, and a keyed hash of the typed text: never the text (it is
attacker-supplied) and never the password.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from marketplace.grants import membership_sync
from marketplace.models import Membership, User
from marketplace.selectors import user_for_login
from marketplace.services import audit_record, client_ip, login_fingerprint


@receiver(user_logged_in, dispatch_uid="marketplace.audit_login")
def audit_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    audit_record(actor=user, action="auth.login", obj=user, ip=client_ip(request))


@receiver(user_login_failed, dispatch_uid="marketplace.audit_login_failed")
def audit_login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                       **kwargs: Any) -> None:
    login = str(credentials.get("email") or credentials.get("username") or credentials.get("login") or "")
    user = user_for_login(login=login)
    audit_record(actor=None, action="auth.login_failed", ip=client_ip(request),
                 detail={"user_id": user.pk if user else None, "login_hash": login_fingerprint(login)})


# Every path that adds or removes a member (services, invitations, the admin, fixtures) keeps
# the organization's group in step, so grants to the group reach exactly the members.
@receiver(post_save, sender=Membership, dispatch_uid="marketplace.membership_group_add")
def membership_group_add(sender: Any, instance: Membership, **kwargs: Any) -> None:
    membership_sync(user=instance.user, organization_id=instance.organization_id, member=True)


@receiver(post_delete, sender=Membership, dispatch_uid="marketplace.membership_group_remove")
def membership_group_remove(sender: Any, instance: Membership, **kwargs: Any) -> None:
    still = Membership.objects.filter(user_id=instance.user_id, organization_id=instance.organization_id).exists()
    if not still:
        membership_sync(user=instance.user, organization_id=instance.organization_id, member=False)
