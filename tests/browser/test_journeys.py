"""Browser journeys for every role, in headless Debian Chromium against a live server and a
real Celery worker: the provider uploads and submits, the admin publishes and approves, the
researcher searches, fills a cart, checks out by invoice and downloads a file whose sha256
matches the manifest.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from django.db import connection

from catalog.synthetic import write_zip
from factories.accounts import totp_code
from factories.dicom import ct_files
from e2e.worker import celery_worker

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)"),
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    # inside one: request this fixture last and make no ORM calls in the test body.
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


def _log_in(browser, base: str, username: str, password: str, *, path: str = "/login/",  # noqa: ANN001, ANN202
            lands: str = "/"):
    """Log in through the page; staff and provider owners then type their TOTP code."""
    page = browser.new_context(accept_downloads=True).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}{path}")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    if "/2fa/authenticate/" in page.url:
        page.fill("input[name=code]", totp_code())
        page.click("main button[type=submit]")
    page.wait_for_url(f"{base}{lands}")
    return page


def test_provider_admin_and_researcher_journeys(live_server, alice, bob, admin_user, dua, tmp_path,
                                               browser):
    # `browser` comes last: the other fixtures write to the database before Playwright's loop starts.
    base = live_server.url
    archive = tmp_path / "chest-ct.zip"
    # 12 studies: at least the disclosure threshold (11), so the dataset can be sold.
    archive.write_bytes(write_zip(ct_files(n_patients=12, n_instances=1, seed=21)))
    junk = tmp_path / "readme.txt"
    junk.write_text("not dicom")

    with celery_worker(connection.settings_dict):
        # Provider: create a dataset, upload a zip and a stray file, watch progress, submit.
        provider = _log_in(browser, base, "alice", "pass-1234567")
        provider.click("text=Provider")
        provider.click("text=New dataset")
        provider.fill("input[name=title]", "Browser chest CT")
        provider.fill("textarea[name=description]", "Chest CT uploaded through the browser")
        provider.fill("input[name=price]", "15.00")
        provider.click("text=Create dataset")
        provider.set_input_files("input[name=files]", [str(archive), str(junk)])
        provider.click("button:has-text('Upload')")
        provider.wait_for_selector("text=12 ingested", timeout=120_000)  # the page polls, then reloads
        assert "readme.txt" in provider.content()
        assert "not a DICOM file" in provider.content()
        provider.click("text=Browser chest CT")
        provider.click("text=Submit for review")
        provider.wait_for_selector("text=Waiting for an administrator")

        # Admin: publish in Django admin.
        admin = _log_in(browser, base, "admin", "admin-pass-123", path="/admin/login/", lands="/admin/")
        admin.goto(f"{base}/admin/catalog/dataset/")
        admin.check("input[name=_selected_action]")
        admin.select_option("select[name=action]", "publish")
        admin.click("button[name=index]")
        admin.wait_for_selector("text=Published 1 dataset")

        # Researcher: search, filter by facet, order with the agreement.
        researcher = _log_in(browser, base, "bob", "pass-1234567")
        researcher.fill("input[name=q]", "chest")
        researcher.press("input[name=q]", "Enter")
        researcher.check("input[name=modality][value=CT]")  # submits the form
        researcher.wait_for_url("**modality=CT**")
        researcher.click("text=Browser chest CT")
        researcher.click("text=Order this data")
        assert "180.00" in researcher.inner_text("#quote-total")  # 12 studies × 15.00
        researcher.click("button:has-text('Add to cart')")
        researcher.wait_for_url(f"{base}/cart/")
        assert "Browser chest CT" in researcher.inner_text(".cart-line")
        assert "180.00 USD" in researcher.inner_text("#cart-total")

        # Checkout by invoice, with a purchase order number and the agreement.
        researcher.check("#checkout input[name=payment_method][value=invoice]")
        researcher.fill("#checkout input[name=po_number]", "PO-BROWSER-7")
        researcher.check("#checkout input[name=accept]")
        researcher.click("#checkout button:has-text('Place order')")
        researcher.wait_for_url(re.compile(r".*/orders/\d+/$"))
        order_url = researcher.url
        assert "Pending admin review" in researcher.inner_text("#order-status")
        assert "Awaiting payment" in researcher.inner_text("#payment-status")
        assert "PO PO-BROWSER-7" in researcher.inner_text("#invoice")
        assert researcher.locator("#card-payment").count() == 0

        # Admin: approve the contract, then the credit terms; the worker delivers.
        admin.goto(f"{base}/admin/orders/contract/")
        admin.check("input[name=_selected_action]")
        admin.select_option("select[name=action]", "approve")
        admin.click("button[name=index]")
        admin.wait_for_selector("text=Approved 1 contract")
        admin.goto(f"{base}/admin/orders/order/")
        admin.check("input[name=_selected_action]")
        admin.select_option("select[name=action]", "approve_credit")
        admin.click("button[name=index]")
        admin.wait_for_selector("text=Credit approved: 1")

        researcher.goto(f"{base}/workspace/")
        researcher.wait_for_selector("a:has-text('manifest.csv')", timeout=120_000)
        researcher.goto(order_url)
        expect(researcher.locator("#order-status")).to_contain_text("Delivered", timeout=30_000)
        assert "credit terms approved" in researcher.inner_text("#invoice")
        researcher.goto(f"{base}/workspace/")

    with researcher.expect_download() as manifest_download:
        researcher.click("a:has-text('manifest.csv')")
    rows = list(csv.DictReader(io.StringIO(Path(manifest_download.value.path()).read_text())))
    assert len(rows) == 12
    first = rows[0]
    with researcher.expect_download() as file_download:
        researcher.click(f"a:has-text('{first['path']}')")
    data = Path(file_download.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == first["sha256"]

    # A third user (the provider) following the researcher's link gets nothing.
    link = researcher.get_attribute(f"a:has-text('{first['path']}')", "href")
    response = provider.goto(f"{base}{link}")
    assert response.status == 404
    shutil.rmtree(tmp_path, ignore_errors=True)



@pytest.fixture
def study_catalog(provider):
    from decimal import Decimal

    from catalog.models import Dataset, Study
    from catalog.search.snapshots import snapshot_refresh

    dataset = Dataset.objects.create(provider=provider, title="Chest CT cohort", status=Dataset.Status.PUBLISHED,
                                     price_per_study=Decimal("3.00"), allow_study_browsing=True)
    Study.objects.bulk_create([
        Study(dataset=dataset, study_uid=f"2.25.77.{i}", pseudo_patient_id=f"P-{i % 40}",
              patient_sex="FM"[i % 2], age_band=["40-49", "60-69"][i % 3 == 0], modalities=["CT"],
              body_part="CHEST", manufacturer=["GE", "SIEMENS"][i % 4 == 0], instance_count=1)
        for i in range(120)])
    snapshot_refresh(dataset_id=dataset.pk)
    return dataset


def test_researcher_builds_a_cohort_without_page_reloads(live_server, bob, study_catalog, browser):
    base = live_server.url
    page = _log_in(browser, base, "bob", "pass-1234567")
    page.goto(f"{base}/cohorts/")
    assert "120 studies" in page.inner_text("#cohort-total")
    page.evaluate("window.__sameDocument = true")
    page.check("input[name=sex][value=F]")
    page.wait_for_url("**/cohorts/?*sex=F*")
    # Locator assertions, not wait_for_function: the page's CSP (script-src 'self') refuses eval.
    expect(page.locator("#cohort-total")).to_have_text(re.compile(r"^\s*60 studies"), timeout=30_000)
    assert page.evaluate("window.__sameDocument === true")  # updated in place, not reloaded
    assert "180.00 USD" in page.inner_text("#cohort-results")  # 60 studies × 3.00
    # The URL holds the whole query: opening it again shows the same cohort.
    fresh = browser.new_page()
    fresh.goto(page.url)
    assert fresh.inner_text("#cohort-total").startswith("60 studies")
    assert fresh.is_checked("input[name=sex][value=F]")
    fresh.close()
    # Matching studies a page at a time, in place; a new sort starts again at page 1.
    assert "Page 1 of 3" in page.inner_text("#cohort-studies")
    page.click("#cohort-studies a[rel=next]")
    page.wait_for_url("**/cohorts/?*page=2*")
    expect(page.locator("#cohort-studies")).to_contain_text("Page 2 of 3", timeout=30_000)
    page.select_option("select[name=sort]", "newest")
    page.wait_for_url("**/cohorts/?*sort=newest*")
    expect(page.locator("#cohort-studies")).to_contain_text("Page 1 of 3", timeout=30_000)
    assert "page=" not in page.url.split("sort=newest")[1] and "page=2" not in page.url
    assert page.evaluate("window.__sameDocument === true")

    # The cohort goes to the cart whole: one line, the same studies and price.
    page.click("button:has-text('Add the whole cohort to the cart')")
    page.wait_for_url(f"{base}/cart/")
    line = page.inner_text(f"#cart-line-{study_catalog.pk}")
    assert "Chest CT cohort" in line and "180.00 USD" in line
    assert "180.00 USD" in page.inner_text("#cart-total")
