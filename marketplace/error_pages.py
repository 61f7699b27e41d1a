"""The branded error pages (templates/400.html, 403.html, 404.html, 500.html) even with
DEBUG=True, as `make run` has it: a person browsing the product never sees Django's
technical 404 page or a traceback; the traceback still goes to the server log
(django.request logs it before the page is made).

Production (DEBUG=False) needs none of this: Django's default handlers render the same
templates. Two pieces, because DEBUG swaps in a technical page at two places (and
csrf_failure, settings.CSRF_FAILURE_VIEW, for a refused form in either mode):

- BrandedErrorPagesMiddleware: a path no URL matches, and Http404 raised by a view;
- BrandedExceptionReporter (settings.DEFAULT_EXCEPTION_REPORTER): every other error page
  DEBUG would show as a traceback, including exceptions raised in middleware and the
  400 of BadRequest/SuspiciousOperation. E-mailed reports keep the full traceback.
"""
from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.template import loader
from django.urls import Resolver404, get_resolver, get_urlconf, resolve
from django.views.debug import ExceptionReporter


def _not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The configured handler404 (Django's page_not_found unless urls.py names another).
    view = get_resolver(get_urlconf()).resolve_error_handler(404)
    return view(request, exception)


class BrandedErrorPagesMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.DEBUG:
            # A path no URL matches never reaches a view or process_exception: Django
            # answers it with its technical 404 page, so it is caught here first.
            try:
                resolve(request.path_info, getattr(request, "urlconf", None))
            except Resolver404 as exc:
                return _not_found(request, exc)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG and isinstance(exception, Http404):
            return _not_found(request, exception)
        return None


class BrandedExceptionReporter(ExceptionReporter):
    """What DEBUG shows instead of a traceback page: the branded 400 or 500 page."""

    def _page(self) -> str:
        bad_request = isinstance(self.exc_value, (BadRequest, SuspiciousOperation))
        return loader.get_template("400.html" if bad_request else "500.html").render()

    def get_traceback_html(self) -> str:
        return super().get_traceback_html() if self.is_email else self._page()

    def get_traceback_text(self) -> str:
        # Sent to clients that do not accept HTML (DEBUG only); e-mails keep the traceback.
        if self.is_email:
            return super().get_traceback_text()
        bad_request = isinstance(self.exc_value, (BadRequest, SuspiciousOperation))
        return "Bad request.\n" if bad_request else "Server error: it has been logged.\n"


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A refused form (expired page, missing cookie) gets the branded 403 page; Django's own
    explains the CSRF mechanism instead (CsrfViewMiddleware logs the reason)."""
    return HttpResponseForbidden(loader.render_to_string("403.html", request=request))
