"""Accounts as the sign-up flow leaves them: a verified e-mail address and, for roles that
require it (staff, provider owners), a TOTP authenticator with a known secret."""
from __future__ import annotations

import time

TEST_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def totp_code(secret: str = TEST_TOTP_SECRET) -> str:
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def ready_account(user, *, two_factor: bool = False):  # noqa: ANN001, ANN201
    """What signing up, verifying the e-mail and (if the role needs it) adding TOTP give."""
    from allauth.account.models import EmailAddress
    from allauth.mfa.totp.internal.auth import TOTP

    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})
    if two_factor:
        TOTP.activate(user, TEST_TOTP_SECRET)
    return user
