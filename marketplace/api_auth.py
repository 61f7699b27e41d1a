"""API authentication by personal access token: ``Authorization: Bearer <token>`` (or
``Token <token>``), beside the browser's session.

A token's scopes are checked here, where every API request passes, rather than by each
view: a view that declares nothing is open to tokens for reading (GET, HEAD, OPTIONS with
the ``read`` scope) and closed to them for writing. A view opens an operation to tokens
with ``token_scopes = {"POST": "download"}``.
"""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from marketplace.exceptions import TokenError, TokenScopeError
from marketplace.models import ApiToken, User
from marketplace.selectors import user_has_two_factor, user_requires_two_factor
from marketplace.tokens import api_token_authenticate

KEYWORDS = ("bearer", "token")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _secret_from(header: str) -> str | None:
    """The secret of an ``Authorization: Bearer|Token <secret>`` header; None for any other
    scheme (HTTP Basic and the like are not ours to judge)."""
    keyword, _, rest = header.strip().partition(" ")
    if keyword.lower() not in KEYWORDS:
        return None
    secret = rest.strip()
    if not secret or " " in secret:
        raise TokenError("Malformed Authorization header: expected 'Bearer <token>'.", code="token_malformed")
    return secret


def token_check(token: ApiToken, *, scope: str | None) -> None:
    """Whether ``token`` may do what needs ``scope`` (None: nothing a token may do)."""
    if scope is None:
        raise TokenScopeError("API tokens may read and download only: this operation needs a signed-in "
                              "browser session.")
    if scope not in token.scopes:
        raise TokenScopeError(f"This token lacks the '{scope}' scope (it has: {', '.join(token.scopes)}).")
    user = token.user
    if user_requires_two_factor(user=user) and not user_has_two_factor(user=user):
        raise TokenScopeError("Your role requires two-factor authentication: set up an authenticator app first.",
                              code="two_factor_required")


def token_authenticate_header(request: HttpRequest, *, scope: str) -> ApiToken | None:
    """For plain Django views: the token of the request's Authorization header, checked for
    ``scope``; None when the request carries no token. Raises TokenError / TokenScopeError."""
    secret = _secret_from(request.META.get("HTTP_AUTHORIZATION", ""))
    if secret is None:
        return None
    token = api_token_authenticate(secret=secret)
    token_check(token, scope=scope)
    return token


def scope_needed(view: Any, method: str) -> str | None:
    declared = getattr(view, "token_scopes", {})
    if method in declared:
        return declared[method]
    return ApiToken.Scope.READ if method in SAFE_METHODS else None


class TokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        try:
            secret = _secret_from(request.META.get("HTTP_AUTHORIZATION", ""))
            if secret is None:
                return None
            token = api_token_authenticate(secret=secret)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from None
        view = request.parser_context.get("view")
        try:
            token_check(token, scope=scope_needed(view, request.method))
        except TokenScopeError as exc:
            raise exceptions.PermissionDenied(exc.message, code=exc.code) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a missing or bad token.
        return 'Bearer realm="api"'


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token (drf-spectacular finds it by target)."""

    target_class = "marketplace.api_auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer",
                "description": "A personal access token from your account page (scopes: read, download); "
                               "'Token <token>' is accepted too."}
