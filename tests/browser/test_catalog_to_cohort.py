"""From the catalog to a cohort in a browser: filter, remove a chip, reach zero results and
untick, carry the criteria into the cohort builder, read its charts, fill the gap."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser.journey import BROWSER_MARKS
from browser.test_journeys import _screenshots

pytestmark = BROWSER_MARKS


@pytest.fixture
def two_datasets(provider, make_member):
    from decimal import Decimal

    from catalog.models import Dataset, Study
    from catalog.search.memory.snapshots import snapshot_refresh
    from marketplace.models import Organization

    _, omega = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    made = {}
    for org, title, body, bands in [(provider, "Chest CT", "CHEST", ["40-49", "60-69"]),
                                    (omega, "Head CT", "HEAD", ["18-29", "80+"])]:
        dataset = Dataset.objects.create(provider=org, title=title, status=Dataset.Status.PUBLISHED,
                                         price_per_study=Decimal("2.00"), allow_study_browsing=True,
                                         modalities=["CT"], body_parts=[body], sexes=["F", "M"], age_bands=bands)
        Study.objects.bulk_create([
            Study(dataset=dataset, study_uid=f"2.25.{dataset.pk}.{i}", pseudo_patient_id=f"{title}-{i % 30}",
                  patient_sex="FM"[i % 2], age_band=bands[i % 3 == 0], modalities=["CT"], body_part=body,
                  instance_count=1) for i in range(60)])
        Dataset.objects.filter(pk=dataset.pk).update(study_count=60, patient_count=30)
        snapshot_refresh(dataset_id=dataset.pk)
        made[title] = dataset.pk
    return made


def test_from_the_catalog_to_a_cohort_and_its_gap(live_server, two_datasets, tmp_path, browser):
    base = live_server.url
    shots = Path(tmp_path)
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}/datasets/")
    expect(page.locator("#catalog-total")).to_contain_text("120 studies · 60 patients")

    # Filter: women, chest.
    with page.expect_navigation():
        page.click("input[name=sex][value=F]")
    page.wait_for_url("**/datasets/?*sex=F*")
    with page.expect_navigation():
        page.click("input[name=body_part][value=CHEST]")
    page.wait_for_url("**/datasets/?*body_part=CHEST*")
    expect(page.locator("#catalog-total")).to_contain_text("30 studies · 15 patients")
    expect(page.locator(".dataset-card .matching")).to_have_text(re.compile(r"^30 of its studies match"))
    _screenshots(page, shots, "catalog-filtered")

    # Remove one chip: only "Sex: Female" goes.
    page.click("a.chip.removable[aria-label='Remove Sex: Female']")
    page.wait_for_load_state()
    assert "sex=" not in page.url and "body_part=CHEST" in page.url
    assert not page.is_checked("input[name=sex][value=F]") and page.is_checked("input[name=body_part][value=CHEST]")
    expect(page.locator("#catalog-total")).to_contain_text("60 studies")

    # Zero results: chest and 18-29 never meet; both ticked boxes stay, one can be unticked.
    page.goto(f"{base}/datasets/?body_part=CHEST&age_band=18-29")
    expect(page.locator("section")).to_contain_text("No dataset matches")
    assert page.is_checked("input[name=age_band][value='18-29']")
    # A click, not uncheck(): the box submits the form, and uncheck() would check the state of
    # a page being replaced (flaky on a loaded machine).
    with page.expect_navigation():
        page.click("input[name=age_band][value='18-29']")
    expect(page.locator("#catalog-total")).to_contain_text("60 studies")
    assert "age_band" not in page.url

    # Into the cohort builder with the same criteria.
    page.click("#to-cohort")
    page.wait_for_url("**/cohorts/?body_part=CHEST")
    assert page.is_checked("input[name=body_part][value=CHEST]")
    expect(page.locator("#cohort-total")).to_contain_text("60 studies")
    figure = page.locator("#mix-age_band")
    expect(figure.locator("figcaption")).to_have_text("Age: studies per value")
    assert figure.locator(".bar-label").all_inner_texts() == ["40-49", "60-69"]
    assert figure.locator(".count").all_inner_texts() == ["40", "20"]
    _screenshots(page, shots, "cohort-charts")

    # Fill the gap: start from Head CT and see what Chest CT adds; then back to the catalog.
    page.goto(f"{base}/cohorts/")
    page.check(f"input[form=gap-form][value='{two_datasets['Head CT']}']")
    page.click("#gap-submit")
    page.wait_for_url(f"**/cohorts/?datasets={two_datasets['Head CT']}")
    gap = page.locator("#fill-the-gap")
    expect(gap).to_contain_text("(0 % of the cohort)")
    expect(gap).to_contain_text("Chest CT adds")
    _screenshots(page, shots, "cohort-gap")
    page.click("#fill-the-gap a.gap-add >> nth=0")
    page.wait_for_load_state()
    expect(page.locator("#cohort-total")).to_contain_text("120 studies")
    page.click("#to-catalog")
    page.wait_for_url(re.compile(r".*/datasets/$"))
