"""The display layer: money with separators and the code, times in the request's zone."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone

from marketplace.templatetags.display import country, day, money, price, when
from marketplace.timezones import TimeZoneMiddleware, valid_zone

INSTANT = dt.datetime(2026, 12, 5, 17, 25, tzinfo=dt.UTC)


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (406350, "USD", "4,063.50 USD"), (123456789, "EUR", "1,234,567.89 EUR"), (1234567, "JPY", "1,234,567 JPY"),
    (1234567, "KWD", "1,234.567 KWD"), (-450, "usd", "-4.50 USD"), (0, "GBP", "0.00 GBP"),
])
def test_money_groups_digits_with_the_currency_places_and_code(minor, currency, text):
    assert money(minor, currency) == text


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (Decimal("4063.5"), "USD", "4,063.50 USD"), (Decimal("1234.5"), "JPY", "1,235 JPY"),
    (Decimal("12.3456"), "BHD", "12.346 BHD"), ("1000", "CHF", "1,000.00 CHF"), (Decimal("12"), "", "12.00"),
])
def test_price_shows_decimal_major_units_the_same_way(amount, currency, text):
    assert price(amount, currency) == text


def test_none_and_empty_give_nothing_for_default():
    assert money(None, "USD") == price(None, "USD") == when(None) == day(None) == day("") == ""
    rendered = Template('{% load display %}{{ none|money:"USD"|default:"—" }}').render(Context({"none": None}))
    assert rendered == "—"


def test_times_are_shown_in_the_active_zone_with_its_abbreviation_and_an_iso_instant():
    with timezone.override(zoneinfo.ZoneInfo("Europe/Berlin")):
        assert when(INSTANT) == '<time datetime="2026-12-05T17:25:00+00:00">5 Dec 2026, 18:25 CET</time>'
        assert day(dt.datetime(2026, 12, 5, 23, 30, tzinfo=dt.UTC)) == '<time datetime="2026-12-06">6 Dec 2026</time>'
    with timezone.override(zoneinfo.ZoneInfo("UTC")):
        assert "17:25 UTC" in when("2026-12-05T17:25:00+00:00")


def test_country_names_codes():
    assert country("nz") == "New Zealand" and country("") == "" and country("Europe") == "Europe"


def _zone_seen(request) -> str:  # noqa: ANN001
    seen = {}

    def view(req):  # noqa: ANN001, ANN202
        seen["zone"] = timezone.get_current_timezone_name()
        return None

    TimeZoneMiddleware(view)(request)
    return seen["zone"]


@pytest.mark.parametrize(("cookie", "zone"), [
    ("Asia/Tokyo", "Asia/Tokyo"), ("Not/AZone", "UTC"), ("../../etc/passwd", "UTC"), ("", "UTC"),
    ("localtime", "UTC"),
])
def test_the_middleware_takes_only_a_valid_browser_zone(cookie, zone):
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory().get("/", HTTP_COOKIE=f"tz={cookie}")
    request.user = AnonymousUser()
    assert _zone_seen(request) == zone
    assert valid_zone(cookie) == (zone if zone != "UTC" else None)


@pytest.mark.django_db
def test_the_account_setting_wins_over_the_browser(alice, client):
    alice.time_zone = "America/New_York"
    alice.save()
    request = RequestFactory().get("/", HTTP_COOKIE="tz=Asia/Tokyo")
    request.user = alice
    assert _zone_seen(request) == "America/New_York"
    client.force_login(alice)
    client.cookies["tz"] = "Asia/Tokyo"
    page = client.get("/account/").content.decode()
    assert "shown in America/New_York" in page
    response = client.post("/account/time-zone/", {"time_zone": "Mars/Olympus"}, follow=True)
    assert "&#x27;Mars/Olympus&#x27; is not a time zone name" in response.content.decode()
    alice.refresh_from_db()
    assert alice.time_zone == "America/New_York"
    client.post("/account/time-zone/", {"time_zone": ""})
    alice.refresh_from_db()
    assert alice.time_zone == ""
    assert "shown in Asia/Tokyo (from your browser)" in client.get("/account/").content.decode()


@pytest.mark.django_db
def test_the_provider_dashboard_shows_list_prices_with_separators_and_the_code(client, alice, provider):
    from catalog.models import Dataset

    Dataset.objects.create(provider=provider, title="Big price", price_per_study=Decimal("4063.50"), currency="EUR")
    client.force_login(alice)
    page = client.get("/provider/").content.decode()
    assert "4,063.50 EUR" in page and "4063.50" not in page
