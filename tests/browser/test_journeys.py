"""Browser journeys for every role, in headless Debian Chromium against a live server and a
real Celery worker: the provider uploads and submits, the admin publishes and approves, the
researcher searches, fills a cart, checks out (by invoice, or by card against the local
Stripe server) and downloads a file whose sha256 matches the manifest; each provider sees
its share.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import time
from pathlib import Path

import pytest
from django.db import connection

from browser.journey import BROWSER_MARKS, approve_and_sign, log_in
from demo.synthetic import write_zip
from e2e.worker import celery_worker
from factories.dicom import ct_files

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = BROWSER_MARKS


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
        provider = log_in(browser, base, "alice", "pass-1234567")
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
        admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/login/", lands="/admin/")
        admin.goto(f"{base}/admin/catalog/dataset/")
        admin.check("input[name=_selected_action]")
        admin.select_option("select[name=action]", "publish")
        admin.click("button[name=index]")
        admin.wait_for_selector("text=Published 1 dataset")

        # Researcher: search, filter by facet, order with the agreement.
        researcher = log_in(browser, base, "bob", "pass-1234567")
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
        researcher.select_option("#checkout select[name=use_category]", "academic_research")
        researcher.fill("#checkout textarea[name=intended_use]", "Training a chest CT triage model for a study.")
        researcher.check("#checkout input[name=accept]")
        researcher.fill("#checkout input[name=password]", "pass-1234567")  # the buyer signs
        researcher.click("#checkout button:has-text('Place order')")
        researcher.wait_for_url(re.compile(r".*/orders/\d+/$"))
        order_url = researcher.url
        assert "Pending admin review" in researcher.inner_text("#order-status")
        assert "Awaiting payment" in researcher.inner_text("#payment-status")
        assert "PO PO-BROWSER-7" in researcher.inner_text("#invoice")
        assert researcher.locator("#card-payment").count() == 0

        # Admin: approve the contract, then the credit terms; the worker delivers.
        approve_and_sign(admin, base)
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
    from catalog.search.memory.snapshots import snapshot_refresh

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
    page = log_in(browser, base, "bob", "pass-1234567")
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


PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1440, "height": 900}


def _screenshots(page, directory: Path, name: str) -> None:  # noqa: ANN001
    """Full-page screenshots at a phone's and a desktop's width; the page must not scroll
    sideways on the phone."""
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(path=str(directory / f"{name}-390.png"), full_page=True)
    assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at 390 px wide ({directory})"
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(directory / f"{name}-1440.png"), full_page=True)


def _reload_until(page, selector: str, text: str, *, timeout: float = 120.0) -> str:  # noqa: ANN001
    """Reload the page until `selector` contains `text` (pages that do not poll by themselves)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = page.inner_text(selector)
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never showed {text!r} within {timeout:.0f} s; last: {shown!r}")
        page.wait_for_timeout(1_000)
        page.reload()


@pytest.fixture
def alpha_stripe_account(provider, admin_user, stripe_settings):
    """Alpha Imaging (alice's provider) is paid through a Stripe Connect account."""
    from orders.payouts import connected_account_create

    return connected_account_create(provider=provider, acting_user=admin_user, email="payouts@alpha.example.org")


@pytest.fixture
def webhooks_to_live_server(live_server, stripe_server, stripe_settings):
    """The local Stripe server sends its signed events to the live server's webhook view."""
    url = f"{live_server.url}/payments/stripe/webhook/"
    secret = stripe_settings.STRIPE_WEBHOOK_SECRET
    stripe_server.register_webhook(url, secret)
    yield url
    # The live server stays up for the session: later tests' events must not reach it.
    stripe_server.register_webhook(url, secret, events=["none.none"])


@pytest.fixture
def worker_environment(monkeypatch, stripe_settings, tiny_threshold):
    """The worker is another process: it reads these settings from its environment."""
    for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
                 "STRIPE_JS_URL"):
        monkeypatch.setenv(name, getattr(stripe_settings, name))
    monkeypatch.setenv("DISCLOSURE_THRESHOLD", "1")


def test_a_cart_across_two_providers_is_paid_by_card_and_each_provider_sees_its_share(
        live_server, bob, alice, admin_user, dua, tiny_threshold, stripe_settings, published_dataset,
        second_provider_dataset, alpha_stripe_account, webhooks_to_live_server, worker_environment, tmp_path,
        browser):
    # `browser` comes last: the other fixtures write to the database before Playwright's loop starts.
    base = live_server.url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    alpha, delta = published_dataset, second_provider_dataset  # 2 studies each: 10.00 and 7.25 per study
    alpha_provider, delta_provider = alpha.provider_id, delta.provider_id

    with celery_worker(connection.settings_dict):
        # Researcher: a cohort that reaches both providers' datasets, into the cart whole.
        researcher = log_in(browser, base, "bob", "pass-1234567")
        researcher.goto(f"{base}/cohorts/")
        researcher.check("input[name=modality][value=CT]")
        researcher.wait_for_url("**/cohorts/?*modality=CT*")
        expect(researcher.locator("#cohort-results")).to_contain_text("Modality: CT", timeout=30_000)
        assert researcher.inner_text("#cohort-total").startswith("4 studies")
        results = researcher.inner_text("#cohort-results")
        assert "Chest CT screening" in results and "Delta brain MR" in results
        assert "Alpha Imaging" in results and "Delta Scans" in results
        researcher.click("button:has-text('Add the whole cohort to the cart')")
        researcher.wait_for_url(f"{base}/cart/")

        # The cart: a line per dataset with its provider and price, one total.
        first_line = researcher.inner_text(f"#cart-line-{alpha.pk}")
        second_line = researcher.inner_text(f"#cart-line-{delta.pk}")
        assert "Alpha Imaging" in first_line and "20.00 USD" in first_line  # 2 studies × 10.00
        assert "Delta Scans" in second_line and "14.50 USD" in second_line  # 2 studies × 7.25
        assert "Modality: CT" in first_line and "Modality: CT" in second_line  # the cohort's criteria
        assert "34.50 USD" in researcher.inner_text("#cart-total")
        _screenshots(researcher, shots, "cart")

        # Checkout by card: the order page then holds the card form (localstripe's Stripe.js).
        researcher.check("#checkout input[name=payment_method][value=card]")
        researcher.select_option("#checkout select[name=use_category]", "academic_research")
        researcher.fill("#checkout textarea[name=intended_use]", "Benchmarking a lung nodule detector on CT.")
        researcher.check("#checkout input[name=accept]")
        researcher.fill("#checkout input[name=password]", "pass-1234567")  # the buyer signs
        researcher.click("#checkout button:has-text('Place order')")
        researcher.wait_for_url(re.compile(r".*/orders/\d+/$"))
        order_url = researcher.url
        order_id = re.search(r"/orders/(\d+)/$", order_url).group(1)
        assert "Awaiting payment" in researcher.inner_text("#payment-status")
        assert "34.50 USD" in researcher.inner_text("#order-total")
        card = researcher.locator("#card-element")
        expect(card.locator("input[placeholder=number]")).to_be_visible()
        _screenshots(researcher, shots, "order-card-form")

        card.locator("input[placeholder=number]").fill("4242424242424242")
        card.locator("input[placeholder=exp_month]").fill("12")
        card.locator("input[placeholder=exp_year]").fill("34")  # Stripe.js here prepends "20"
        card.locator("input[placeholder=cvc]").fill("123")
        card.locator("input[placeholder=postal_code]").fill("10001")
        researcher.click("#card-submit")
        # Paid only once Stripe's signed webhook reached the live server; the page finds out itself.
        expect(researcher.locator("#payment-status")).to_have_text("Paid", timeout=60_000)
        assert researcher.url == order_url
        assert researcher.locator("#card-payment").count() == 0
        assert "Pending admin review" in researcher.inner_text("#order-status")
        _screenshots(researcher, shots, "order-paid")
        researcher.goto(f"{base}/account/")  # settings and API tokens: tables wrap or scroll in their card
        _screenshots(researcher, shots, "account")
        researcher.goto(order_url)

        # Admin: approve the contract in Django admin; the worker delivers and pays Alpha.
        admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/login/", lands="/admin/")
        approve_and_sign(admin, base)

        researcher.goto(f"{base}/workspace/")
        researcher.wait_for_selector("a:has-text('manifest.csv')", timeout=120_000)
        researcher.goto(order_url)
        expect(researcher.locator("#order-status")).to_contain_text("Delivered", timeout=30_000)
        assert "Completed" in researcher.inner_text("#order-status")  # delivered and paid

        # Alpha (a Stripe Connect account): its net share, transferred through Stripe.
        alpha_owner = log_in(browser, base, "alice", "pass-1234567")
        alpha_owner.goto(f"{base}/provider/")
        transfers = "div.card:has(h2:text-is('Transfers to you'))"
        row = _reload_until(alpha_owner, transfers, "Transferred")
        assert f"#{order_id}" in row and "17.00 USD" in row  # 20.00 less the 15 % fee (3.00)
        earnings = alpha_owner.inner_text(f"#earnings-{alpha_provider}-USD")
        assert "Sales 20.00 USD" in earnings and "platform fees 3.00 USD" in earnings
        assert "net 17.00 USD" in earnings and "transferred 17.00 USD" in earnings
        assert "balance owed to you 0.00 USD" in earnings
        assert "to your Stripe account" in alpha_owner.inner_text("main")

    # Delta (no Stripe account): its net share is owed, paid outside Stripe later.
    delta_owner = log_in(browser, base, "dave", "pass-1234567")
    delta_owner.goto(f"{base}/provider/")
    earnings = delta_owner.inner_text(f"#earnings-{delta_provider}-USD")
    assert "Sales 14.50 USD" in earnings and "platform fees 2.18 USD" in earnings  # 15 % of 14.50, rounded
    assert "net 12.32 USD" in earnings and "transferred 0.00 USD" in earnings
    assert "balance owed to you 12.32 USD" in earnings
    # The worker's run for this order (finished before it stopped) left Delta's share pending.
    pending = delta_owner.inner_text(transfers)
    assert f"#{order_id}" in pending and "12.32 USD" in pending and "Pending" in pending
    assert "Transferred" not in pending
    assert "by bank transfer from the marketplace" in delta_owner.inner_text("main")
