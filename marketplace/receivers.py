"""Audit every login and every failed login, whichever form or API it came through.

Receivers only call the audit service. Failed logins store the account id when the typed
login names an account, and a keyed hash of the typed text: never the text (it is
attacker-supplied) and never the password.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from marketplace.models import User
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
