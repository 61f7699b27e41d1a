"""The time zone pages show times in: the account's own choice, else the zone the browser
reports (static/js/timezone.js keeps it in the ``tz`` cookie), else UTC. Only names of the
IANA database as zoneinfo knows it are taken, so a cookie cannot smuggle anything else in."""
from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

COOKIE = "tz"
DEFAULT = "UTC"


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    # "localtime" and the like are files in the database, not places a person lives.
    return tuple(sorted(n for n in zoneinfo.available_timezones() if "/" in n or n == "UTC"))


def valid_zone(name: object) -> str | None:
    """``name`` when it is a known IANA zone (exact spelling), else None."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    return name if name in _zone_set() else None


@lru_cache(maxsize=1)
def _zone_set() -> frozenset[str]:
    return frozenset(zone_names())


def zone_choices() -> list[tuple[str, str]]:
    return [(n, n.replace("_", " ")) for n in zone_names()]


def request_zone(request: HttpRequest) -> tuple[str, str]:
    """(zone name, where it came from: "account", "browser" or "default")."""
    user = getattr(request, "user", None)
    chosen = valid_zone(getattr(user, "time_zone", "")) if user is not None and user.is_authenticated else None
    if chosen:
        return chosen, "account"
    browser = valid_zone(request.COOKIES.get(COOKIE))
    if browser:
        return browser, "browser"
    return DEFAULT, "default"


class TimeZoneMiddleware:
    """Activates the request's zone for templates (the ``display`` filters, |date); after
    AuthenticationMiddleware, which gives the account's choice."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name, source = request_zone(request)
        request.time_zone, request.time_zone_source = name, source
        timezone.activate(zoneinfo.ZoneInfo(name))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
