"""Per-account request budgets (per address when anonymous), counted in the shared cache
(Redis), so every web process sees the same count.

Fixed windows: simple, and a burst at a window's edge gets at most twice the rate, which
is enough to make differencing thousands of queries slow and visible in the audit trail.
"""
from __future__ import annotations

import time

from django.core.cache import cache

from marketplace.exceptions import ApplicationError
from marketplace.models import User

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class RateLimitedError(ApplicationError):
    code = "rate_limited"
    status = 429


def parse_rate(rate: str) -> tuple[int, str, int]:
    """"60/hour" -> (60, "hour", 3600)."""
    count, _, unit = rate.partition("/")
    return int(count), unit, PERIODS[unit]


def requester_key(*, user: User | None, ip: str | None) -> str:
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{ip or 'unknown'}"


def rate_limit_hit(*, scope: str, key: str, rate: str, what: str) -> None:
    """Count one request of ``scope`` for ``key``; RateLimitedError past the rate."""
    allowed, unit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    cache_key = f"ratelimit:{scope}:{key}:{window}"
    cache.add(cache_key, 0, timeout=period + 5)
    try:
        used = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=period + 5)
        used = 1
    if used > allowed:
        wait = int((window + 1) * period - now) + 1
        who = "one account" if key.startswith("user:") else "one address (sign in for your own budget)"
        raise RateLimitedError(
            f"Too many {what}: at most {allowed} per {unit} for {who}. Try again in {wait} seconds.",
            extra={"retry_after": wait})


def rate_limit_reached(*, scope: str, key: str, rate: str, what: str) -> None:
    """RateLimitedError when ``key`` already used up this window's budget of ``scope``;
    counts nothing (for budgets of failures, counted by rate_limit_hit on each failure)."""
    allowed, unit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    used = cache.get(f"ratelimit:{scope}:{key}:{window}") or 0
    if used >= allowed:
        wait = int((window + 1) * period - now) + 1
        raise RateLimitedError(f"Too many {what}: at most {allowed} per {unit}. Try again in {wait} seconds.",
                               extra={"retry_after": wait})
