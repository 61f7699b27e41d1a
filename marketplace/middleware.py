"""NotFoundErrorMiddleware turns the access helpers' NotFoundError into Django's 404 for every HTML view.

access_* selectors raise the same NotFoundError for "does not exist" and "not yours";
views call them directly instead of each translating the error (DRF views get the same
mapping from marketplace.api_errors).
"""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.defaults import page_not_found

from marketplace.exceptions import NotFoundError
from marketplace.selectors import user_has_two_factor, user_requires_two_factor


class NotFoundErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, NotFoundError):
            return page_not_found(request, Http404(exception.message))
        return None


class RequireTwoFactorMiddleware:
    """Staff, admins and provider-organization owners without a second factor are sent to
    set one up before anything else (account pages and log-out stay reachable; the API
    answers 403). Login itself asks for the factor once it exists (allauth.mfa)."""

    ALLOWED_PREFIXES = ("/accounts/", "/logout/", "/static/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated and not request.path.startswith(self.ALLOWED_PREFIXES)
                and user_requires_two_factor(user=user) and not user_has_two_factor(user=user)):
            message = "Your role requires two-factor authentication: set up an authenticator app first."
            if request.path.startswith("/api/"):
                return JsonResponse({"message": message, "code": "two_factor_required", "extra": {}}, status=403)
            messages.warning(request, message)
            return redirect(f"{reverse('mfa_activate_totp')}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
