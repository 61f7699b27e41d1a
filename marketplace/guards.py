"""Checks an action runs first; each raises an ApplicationError whose message tells the
user what to do."""
from __future__ import annotations

from marketplace.exceptions import PermissionDeniedError
from marketplace.models import User
from marketplace.selectors import user_email_verified


class EmailNotVerifiedError(PermissionDeniedError):
    code = "email_not_verified"


def require_verified_email(*, user: User) -> None:
    """Ordering (a contract, data delivery, invoices) needs an address we know reaches the user."""
    if not user_email_verified(user=user):
        raise EmailNotVerifiedError(
            "Please verify your e-mail address before ordering: open the link we sent you, or send a new "
            "one from Account → E-mail.")
