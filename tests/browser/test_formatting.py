"""Formatting in Chromium: a provider picks a condition with the searchable picker and a
currency from the list; a researcher sees a date in the browser's zone and money with
separators; both pages fit a phone."""
from __future__ import annotations

from browser.journey import BROWSER_MARKS, in_thread, log_in
from browser.test_journeys import _screenshots

pytestmark = BROWSER_MARKS

PICKED = "ICD10:J18.9|Pneumonia, unspecified"


def test_a_provider_picks_a_condition_and_a_currency(live_server, alice, tmp_path, browser):
    base = live_server.url
    page = log_in(browser, base, "alice", "pass-1234567")
    page.goto(f"{base}/provider/datasets/new/")
    search = page.locator(".condition-picker input[list]")
    search.fill(PICKED)
    search.press("Enter")  # adds the pick, does not submit the form
    field = page.locator("textarea[name$=conditions]")
    assert field.input_value().strip() == PICKED
    assert "Added ICD10:J18.9 Pneumonia, unspecified" in page.locator(".condition-picker [aria-live]").inner_text()
    page.select_option("select[name$=currency]", "EUR")
    assert page.locator("select[name$=currency]").input_value() == "EUR"
    _screenshots(page, tmp_path, "dataset-form-picker")


def test_a_researcher_sees_times_in_the_browser_zone_and_grouped_money(live_server, bob, published_dataset,
                                                                       tmp_path, browser):
    from catalog.models import Dataset
    from marketplace.services import notification_send

    def prepare() -> int:
        Dataset.objects.filter(pk=published_dataset.pk).update(price_minor=406350)
        notification_send(user=bob, message="A dataset you follow was updated.")
        return published_dataset.pk

    dataset_id = in_thread(prepare)
    base = live_server.url
    context = browser.new_context(timezone_id="Asia/Tokyo")
    page = context.new_page()
    page.goto(f"{base}/login/")  # the first page sets the zone cookie from the browser
    page.fill("input[name=login]", "bob")
    page.fill("input[name=password]", "pass-1234567")
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    page.goto(f"{base}/notifications/")
    stamp = page.locator("main time").first
    assert stamp.inner_text().endswith("JST")
    assert stamp.get_attribute("datetime").endswith("+00:00")
    _screenshots(page, tmp_path, "notifications-tokyo")
    page.goto(f"{base}/datasets/{dataset_id}/")
    assert "4,063.50 USD per study" in page.locator("main").inner_text()
    _screenshots(page, tmp_path, "dataset-price")
    context.close()
