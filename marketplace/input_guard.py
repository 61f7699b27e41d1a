"""The one place that refuses text PostgreSQL cannot store, and amounts it cannot hold.

PostgreSQL refuses NUL bytes in text (a 500 wherever a parameter reaches SQL) and a
lone surrogate cannot be encoded to UTF-8 at all. Rather than
a check in each of forty views, ``BadInputMiddleware`` refuses every request whose query
parameters, form fields, uploaded file names or cookies hold one, with a 400 naming the
parameter; the API's JSON bodies get the same check in ``marketplace.parsers``.

Amounts of money typed by people go through ``amount_from``: numeric(12,2) overflows at
1e10, ``Decimal`` accepts sNaN, NaN, Infinity and 1e400, and a third decimal place would
be rounded away silently by the database.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html

from marketplace.exceptions import ApplicationError

# NUL, and the UTF-16 surrogates (a lone one is not text: it cannot be encoded to UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# numeric(max_digits=12, decimal_places=2): the largest amount any money column holds.
MAX_AMOUNT = Decimal("9999999999.99")


class InvalidInputError(ApplicationError):
    """Input refused before it reached a query; ``extra["fields"]`` names each field."""

    code = "invalid_input"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", extra={"fields": {field: [problem]}})
        self.field = field


def printable_name(name: str) -> str:
    """A parameter's name fit for a message (its own NULs and surrogates escaped, cut to 60)."""
    return _UNSTORABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if m.group() == "\x00"
                           else f"\\u{ord(m.group()):04x}", name[:60])


def text_problem(value: str) -> str | None:
    """Why this text cannot be stored, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL byte (\\x00), which is not allowed in text."
    return "contains a lone surrogate (not valid Unicode text)."


def check_text(field: str, value: str) -> None:
    problem = text_problem(value)
    if problem:
        raise InvalidInputError(printable_name(field), problem)


def check_pairs(where: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Check names and values; ``where`` prefixes the name only when it is a cookie."""
    for name, value in pairs:
        label = f"{where}{name}"
        problem = text_problem(name)
        if problem:
            raise InvalidInputError(printable_name(label), f"the name {problem}")
        check_text(label, value)


def amount_from(raw: object, *, field: str) -> Decimal:
    """An amount of money as typed: a finite number from 0 to 9,999,999,999.99 with at most
    two decimal places; anything else is an InvalidInputError naming ``field``."""
    text = str(raw).strip()
    if not text:
        raise InvalidInputError(field, "is required.")
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidInputError(field, f"must be a number such as 12.50 (got {text[:20]!r}).") from None
    if not value.is_finite():
        raise InvalidInputError(field, f"must be a number such as 12.50 (got {text[:20]!r}).")
    if value < 0 or value > MAX_AMOUNT:
        raise InvalidInputError(field, f"must be from 0 to {MAX_AMOUNT:,}.")
    if value != value.quantize(Decimal("0.01"), rounding="ROUND_DOWN"):
        raise InvalidInputError(field, "must have at most 2 decimal places (whole cents).")
    return value.quantize(Decimal("0.01")) + 0  # "-0" -> 0.00


# Ten trillion in any currency's minor units; more than any order here could cost.
MAX_MINOR_AMOUNT = 10**16


def minor_amount_from(raw: object, *, field: str) -> int:
    """An amount in a currency's minor units (cents), as a form sends it: digits only, from 0
    to MAX_MINOR_AMOUNT; anything else is an InvalidInputError naming ``field``."""
    text = str(raw).strip()
    if not text:
        raise InvalidInputError(field, "is required.")
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_MINOR_AMOUNT)):
        raise InvalidInputError(field, f"must be a whole number of cents such as 1250 (got {text[:20]!r}).")
    value = int(text)
    if value > MAX_MINOR_AMOUNT:
        raise InvalidInputError(field, f"must be from 0 to {MAX_MINOR_AMOUNT:,}.")
    return value


class BadInputMiddleware:
    """Refuse NUL bytes and lone surrogates in any query parameter, form field, uploaded
    file name or cookie with a 400 that names it (JSON for /api/, a short page otherwise).

    Placed before the session middleware: a session cookie holding NUL would otherwise be
    looked up in the database.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            check_pairs("", ((k, v) for k, vs in request.GET.lists() for v in vs))
            check_pairs("cookie ", request.COOKIES.items())
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                # Only form and multipart bodies fill request.POST; JSON goes to the parser.
                check_pairs("", ((k, v) for k, vs in request.POST.lists() for v in vs))
                check_pairs("", ((k, f.name or "") for k, fs in request.FILES.lists() for f in fs))
        except InvalidInputError as exc:
            return bad_input_response(request, exc)
        return self.get_response(request)


def bad_input_response(request: HttpRequest, exc: InvalidInputError) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"message": exc.message, "code": exc.code, "extra": exc.extra}, status=400)
    # A plain page: the session, user and messages are not loaded yet (see the class).
    body = format_html("<!doctype html><title>Bad request</title><h1>Bad request</h1>"
                       '<p role="alert">{}</p><p><a href="javascript:history.back()">Go back</a></p>', exc.message)
    return HttpResponse(body, status=400)
