"""Personal access tokens: created and revoked by their owner on the account page, used by
the REST API and the command-line client (``Authorization: Bearer <token>``).

A token is ``mkt_`` plus 43 random URL-safe characters. Only its SHA-256 is stored, with
the first characters as a visible prefix; the secret is returned once, by
``api_token_create``. Creating and revoking are audited; use marks ``last_used`` at most
once a minute.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from marketplace.exceptions import (
    ApplicationError,
    NotFoundError,
    TokenExpiredError,
    TokenRevokedError,
    UnknownTokenError,
)
from marketplace.models import ApiToken, User
from marketplace.services import audit_record

TOKEN_PREFIX = "mkt_"
VISIBLE_PREFIX_CHARS = len(TOKEN_PREFIX) + 8
# A secret longer than this is not one of ours: refused before it is hashed or looked up.
MAX_TOKEN_CHARS = 100
MAX_ACTIVE_TOKENS = 20
MAX_LIFETIME = timedelta(days=366)
LAST_USED_RESOLUTION = timedelta(minutes=1)
SCOPES = tuple(ApiToken.Scope.values)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ---- reads ------------------------------------------------------------------------------
def api_tokens_for_user(*, user: User) -> QuerySet[ApiToken]:
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user)


def access_api_token(*, user: User, token_id: int) -> ApiToken:
    """One of the user's own tokens; the same NotFoundError for missing and someone else's."""
    token = api_tokens_for_user(user=user).filter(pk=token_id).first()
    if token is None:
        raise NotFoundError("Token not found.")
    return token


# ---- writes -----------------------------------------------------------------------------
@transaction.atomic
def api_token_create(*, user: User, name: str, scopes: list[str], expires: datetime | None,
                     ip: str | None = None) -> tuple[ApiToken, str]:
    """Create a token for ``user`` (who is also the acting user); returns the row and the
    secret, which is not stored and cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise ApplicationError("Give the token a name of 1 to 100 characters.", code="token_name")
    chosen = sorted(set(scopes))
    if not chosen or any(scope not in SCOPES for scope in chosen):
        raise ApplicationError(f"Choose the token's scopes among: {', '.join(SCOPES)}.", code="token_scopes")
    now = timezone.now()
    if expires is not None and not now < expires <= now + MAX_LIFETIME:
        raise ApplicationError("A token's expiry must be in the future and within a year.", code="token_expiry")
    # Locks the owner's row: two concurrent creations cannot both pass the count below.
    User.objects.select_for_update().filter(pk=user.pk).first()
    active = api_tokens_for_user(user=user).filter(revoked_at__isnull=True).filter(
        Q(expires__isnull=True) | Q(expires__gt=now)).count()
    if active >= MAX_ACTIVE_TOKENS:
        raise ApplicationError(f"You have {active} active tokens: revoke one before creating another.",
                               code="token_limit")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=secret[:VISIBLE_PREFIX_CHARS],
                                    token_hash=token_hash(secret), scopes=chosen, expires=expires)
    audit_record(actor=user, action="api_token.create", obj=token, ip=ip,
                 detail={"scopes": chosen, "expires": expires.isoformat() if expires else None})
    return token, secret


@transaction.atomic
def api_token_revoke(*, user: User, token_id: int, ip: str | None = None) -> ApiToken:
    """Revoke one of the user's tokens at once. Revoking a revoked token changes nothing."""
    token = access_api_token(user=user, token_id=token_id)
    return _revoke(token, actor=user, ip=ip, detail={})


@transaction.atomic
def api_token_revoke_by_staff(*, token: ApiToken, acting_user: User, ip: str | None = None) -> ApiToken:
    """Staff revoke someone's token (the admin's action, which checks the permission): the
    audit event names the staff member as actor and the owner in its detail. Idempotent."""
    return _revoke(token, actor=acting_user, ip=ip, detail={"owner_id": token.user_id, "by_staff": True})


def _revoke(token: ApiToken, *, actor: User, ip: str | None, detail: dict) -> ApiToken:
    # The lock orders a revocation after a concurrent one: one audit event per revocation.
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(actor=actor, action="api_token.revoke", obj=token, ip=ip, detail=detail)
    return token


def api_token_authenticate(*, secret: str) -> ApiToken:
    """The active token with this secret (its user loaded), or an error naming the problem:
    UnknownTokenError, TokenRevokedError, TokenExpiredError."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_CHARS or not secret.isprintable():
        raise UnknownTokenError("unknown token: this is not a token issued here.")
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash(secret)).first()
    if token is None or not token.user.is_active:
        raise UnknownTokenError("unknown token: create one on your account page.")
    if token.revoked_at is not None:
        raise TokenRevokedError(f"token revoked: {token.name!r} ({token.prefix}…) was revoked; "
                                "create a new one on your account page.")
    now = timezone.now()
    if token.is_expired(now):
        when = token.expires.astimezone(UTC)
        raise TokenExpiredError(f"token expired: {token.name!r} ({token.prefix}…) expired on {when:%Y-%m-%d %H:%M} "
                                "UTC; create a new one on your account page.")
    _touch(token, now)
    return token


def _touch(token: ApiToken, now: datetime) -> None:
    # A conditional update, not a read-then-write: concurrent requests of one busy client
    # write at most one row a minute between them.
    stale = Q(last_used__isnull=True) | Q(last_used__lt=now - LAST_USED_RESOLUTION)
    if ApiToken.objects.filter(stale, pk=token.pk).update(last_used=now):
        token.last_used = now
