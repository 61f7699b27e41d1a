"""Expected errors: their message is safe to show to the user (never PHI)."""
from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra or {}


class NotFoundError(ApplicationError):
    """Raised alike for "does not exist" and "not yours", so ids reveal nothing."""

    code = "not_found"
    status = 404


class PermissionDeniedError(ApplicationError):
    code = "permission_denied"
    status = 403


class InvalidTransitionError(ApplicationError):
    code = "invalid_transition"
    status = 409


class TokenError(ApplicationError):
    """An API token that cannot authenticate: the message names the problem."""

    code = "token_invalid"
    status = 401


class UnknownTokenError(TokenError):
    code = "token_unknown"


class TokenRevokedError(TokenError):
    code = "token_revoked"


class TokenExpiredError(TokenError):
    code = "token_expired"


class TokenScopeError(PermissionDeniedError):
    code = "token_scope"
