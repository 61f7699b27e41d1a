"""Turns the access helpers' NotFoundError into Django's 404 for every HTML view.

access_* selectors raise the same NotFoundError for "does not exist" and "not yours";
views call them directly instead of each translating the error (DRF views get the same
mapping from marketplace.api_errors).
"""
from __future__ import annotations

from collections.abc import Callable

from django.http import Http404, HttpRequest, HttpResponse
from django.views.defaults import page_not_found

from marketplace.exceptions import NotFoundError


class NotFoundErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, NotFoundError):
            return page_not_found(request, Http404(exception.message))
        return None
