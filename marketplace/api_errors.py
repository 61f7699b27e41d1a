"""One DRF exception handler: every API error is {"message", "code", "extra"}."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from marketplace.exceptions import ApplicationError

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        response = Response({"message": exc.message, "code": exc.code, "extra": exc.extra}, status=exc.status)
        if "retry_after" in exc.extra:
            response["Retry-After"] = str(exc.extra["retry_after"])
        return response
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = {"message": _first_problem(response.data), "code": "invalid",
                         "extra": {"fields": response.data}}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        response.data = {"message": str(detail), "code": getattr(detail, "code", "error"), "extra": {}}
    return response


def _first_problem(errors: Any, path: str = "") -> str:
    """"Invalid input: expected_total: A valid number is required." (the first field named)."""
    while isinstance(errors, (dict, list)) and errors:
        if isinstance(errors, dict):
            key, errors = next(iter(errors.items()))
            if key != "non_field_errors":
                path = f"{path}.{key}" if path else str(key)
        else:
            errors = errors[0]
    return f"Invalid input: {path}: {errors}" if path else f"Invalid input: {errors}"
