"""Demo accounts (seed_demo): verified e-mail, accepted terms, and a second factor for the
roles that need one. Local demo data only: the secrets are written to var/demo_logins.txt."""
from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
)
from allauth.mfa.utils import decrypt
from django.conf import settings
from django.utils import timezone

from marketplace.models import User
from marketplace.services import audit_record


def demo_account_ready(user: User) -> User:
    """Idempotent: also brings demo users of an older seed up to date."""
    EmailAddress.objects.update_or_create(user=user, email=user.email,
                                          defaults={"verified": True, "primary": True})
    if not user.terms_accepted_at:
        User.objects.filter(pk=user.pk).update(terms_version=settings.TERMS_VERSION, terms_accepted_at=timezone.now())
    return user


def demo_two_factor(user: User) -> tuple[str, str, list[str]]:
    """The user's TOTP secret (made on first call), its otpauth URI and unused recovery codes."""
    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if totp is None:
        totp = TOTP.activate(user, generate_totp_secret()).instance
        audit_record(actor=None, action="demo.two_factor_seed", obj=user)
    recovery = Authenticator.objects.filter(user=user, type=Authenticator.Type.RECOVERY_CODES).first()
    codes = (RecoveryCodes(recovery) if recovery else RecoveryCodes.activate(user)).get_unused_codes()
    secret = decrypt(totp.data["secret"])
    issuer = settings.MFA_TOTP_ISSUER.replace(" ", "%20")
    uri = f"otpauth://totp/{issuer}:{user.username}?secret={secret}&issuer={issuer}&digits=6&period=30"
    return secret, uri, codes


def demo_totp_code(user: User) -> str | None:
    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    if totp is None:
        return None
    import time

    return format_hotp_value(hotp_value(decrypt(totp.data["secret"]), int(time.time()) // 30))
