"""The one way pages show money and time (``{% load display %}``):

    {{ line.amount_minor|money:line.currency }}   minor units   → "1,234.50 USD", "1,234 JPY"
    {{ dataset.price_per_study|price:dataset.currency }}  a Decimal of major units, the same way
    {{ order.created|when }}   <time datetime="…+00:00">5 Dec 2026, 18:25 CET</time>
    {{ invoice.due|day }}      <time datetime="2026-12-05">5 Dec 2026</time>
    {{ org.country|country }}  "NZ" → "New Zealand"

Times are shown in the request's zone (marketplace/timezones.py), always with its
abbreviation; the datetime attribute keeps the exact instant in UTC for machines. ``None``
and "" give "" so ``|default:"—"`` still works. ``{% load money %}`` is this same library.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html

from marketplace.countries import COUNTRIES
from orders.currency import format_major, format_money

register = template.Library()

DATE_FORMAT = "j M Y"
DATETIME_FORMAT = "j M Y, H:i T"


@register.filter
def money(amount_minor: int | None, currency: str) -> str:
    return "" if amount_minor in (None, "") else format_money(int(amount_minor), str(currency))


@register.filter
def price(amount: Decimal | int | str | None, currency: str) -> str:
    if amount in (None, ""):
        return ""
    try:
        return format_major(amount, str(currency))
    except (InvalidOperation, ValueError):
        return ""


def _instant(value: object) -> dt.datetime | None:
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, dt.datetime):
        return None
    # A naive value is read as UTC, the zone the database and the workers keep.
    return value if timezone.is_aware(value) else value.replace(tzinfo=dt.UTC)


def when_text(value: object) -> str:
    """The date-time in the active zone as plain text ("5 Dec 2026, 18:25 CET"), or ""."""
    instant = _instant(value)
    return "" if instant is None else date_format(timezone.localtime(instant), DATETIME_FORMAT)


@register.filter
def when(value: object) -> str:
    instant = _instant(value)
    if instant is None:
        return ""
    iso = instant.astimezone(dt.UTC).isoformat(timespec="seconds")
    return format_html('<time datetime="{}">{}</time>', iso, when_text(instant))


@register.filter
def day(value: object) -> str:
    """A calendar date; a date-time becomes its date in the active zone."""
    instant = _instant(value)
    if instant is not None:
        value = timezone.localtime(instant).date()
    elif isinstance(value, str):
        value = parse_date(value)
    if not isinstance(value, dt.date):
        return ""
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), date_format(value, DATE_FORMAT))


@register.filter
def country(code: object) -> str:
    """"NZ" → "New Zealand"; "" stays "" (for |default), anything else as it is."""
    text = "" if code is None else str(code)
    return COUNTRIES.get(text.upper(), text) if len(text) == 2 else text


@register.simple_tag(takes_context=True)
def time_zone_name(context: template.Context) -> str:
    """The active zone's name, for "times in Europe/Berlin" notes."""
    return timezone.get_current_timezone_name()
