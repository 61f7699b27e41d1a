"""django-allauth hooks: how failed logins are counted, how usernames are made, and the
audit of throttled logins."""
from __future__ import annotations

import re
import secrets
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from marketplace.models import User
from marketplace.selectors import user_for_login
from marketplace.services import audit_record, client_ip, login_fingerprint


class AccountAdapter(DefaultAccountAdapter):
    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth counts failures per typed login, so "bob" and "bob@example.org" (and
        # "BOB@Example.org") would each get their own budget for one account. Count per
        # account when the login names one, else per (hashed) login. Pinned allauth 65.21:
        # this private hook is also used to clear the count after a password reset.
        login = str(credentials.get("email") or credentials.get("username") or "")
        user = user_for_login(login=login)
        return f"user:{user.pk}" if user is not None else f"login:{login_fingerprint(login)}"

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError:
            # Refused before any password check: audit it (no signal does), ids only.
            login = str(credentials.get("email") or credentials.get("username") or "")
            user = user_for_login(login=login)
            audit_record(actor=None, action="auth.login_throttled", ip=client_ip(request),
                         detail={"user_id": user.pk if user else None, "login_hash": login_fingerprint(login)})
            raise

    def populate_username(self, request: HttpRequest, user: User) -> None:
        # Sign-up asks no username, so it cannot tell anyone that one is taken. A random
        # suffix also keeps the generated name from hinting at other accounts ("dora2").
        if not user.username:
            local = re.sub(r"[^a-z0-9]+", "", (user.email or "").split("@")[0].lower())[:20] or "user"
            username = f"{local}-{secrets.token_hex(3)}"
            while User.objects.filter(username__iexact=username).exists():
                username = f"{local}-{secrets.token_hex(3)}"
            user.username = username
