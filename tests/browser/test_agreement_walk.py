"""The agreement walk in headless Chromium, every step through the pages: the researcher asks
for different terms, the provider offers, the researcher counters, the provider accepts; the
researcher signs at checkout (password typed again), the provider consents by signing, the
admin approves by signing; the worker delivers with a de-identification certificate; when
the term ends (time moved forward) the access is gone. And an admin revoking access in the
middle of a term kills the links at once.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from browser.journey import BROWSER_MARKS, approve_and_sign, fresh_totp_code, in_thread, log_in
from e2e.worker import celery_worker

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = BROWSER_MARKS

LINK = re.compile(r'href="(/workspace/download/[^"/]+/)"')


@pytest.fixture
def consent_dataset(published_dataset):
    """The shared dataset, asking for the provider's consent on each order."""
    type(published_dataset).objects.filter(pk=published_dataset.pk).update(requires_provider_consent=True)
    published_dataset.refresh_from_db()
    return published_dataset


@pytest.fixture
def worker_env(monkeypatch, tiny_threshold):
    monkeypatch.setenv("DISCLOSURE_THRESHOLD", "1")  # the worker is another process


def _fill_terms(page, form: str, *, price: str, term_months: str, seats: str = "") -> None:  # noqa: ANN001
    page.fill(f"{form} input[name=price]", price)
    page.fill(f"{form} input[name=term_months]", term_months)
    page.fill(f"{form} input[name=seats]", seats)


def test_request_offer_counter_accept_sign_consent_approve_deliver_and_expire(
        live_server, alice, bob, admin_user, dua, consent_dataset, worker_env, browser):
    base = live_server.url
    dataset_url = f"{base}/datasets/{consent_dataset.pk}/"

    with celery_worker(connection.settings_dict):
        # Researcher: the terms and the agreement's hash are on the page; ask for other terms.
        researcher = log_in(browser, base, "bob", "pass-1234567")
        researcher.goto(dataset_url)
        assert "Licence terms" in researcher.inner_text("#licence-terms")
        researcher.click("#ask-terms")
        _fill_terms(researcher, "#negotiation-request", price="15.00", term_months="24")
        researcher.fill("#negotiation-request textarea[name=message]", "Two years, for a nodule study.")
        researcher.click("#negotiation-request button[type=submit]")
        researcher.wait_for_url(re.compile(r".*/negotiations/\d+/$"))
        negotiation_url = researcher.url

        # Provider: answers with an offer (version 1).
        provider = log_in(browser, base, "alice", "pass-1234567")
        provider.goto(f"{base}/provider/negotiations/")
        provider.click(f"a[href='{negotiation_url.removeprefix(base)}']")
        _fill_terms(provider, "#counter", price="30.00", term_months="12")
        provider.click("#counter button[type=submit]")
        expect(provider.locator("#version-1")).to_contain_text("30.00")

        # Researcher: counters (version 2), the page shows what changed.
        researcher.goto(negotiation_url)
        _fill_terms(researcher, "#counter", price="24.00", term_months="12", seats="3")
        researcher.click("#counter button[type=submit]")
        version_2 = researcher.locator("#version-2")
        expect(version_2).to_contain_text("24.00")
        expect(version_2.locator(".changes")).to_contain_text("Named users")
        expect(researcher.locator("#version-1")).to_contain_text("Superseded")

        # Provider: accepts version 2: it goes into the researcher's cart at its price.
        provider.goto(negotiation_url)
        provider.click("#version-2 button[value=accept]")
        expect(provider.locator("#version-2")).to_contain_text("Accepted")

        # Researcher: signs at checkout; a wrong password first is refused.
        researcher.goto(f"{base}/cart/")
        assert "24.00" in researcher.inner_text("#cart-total")
        researcher.check("#checkout input[name=payment_method][value=invoice]")
        researcher.select_option("#checkout select[name=use_category]", index=1)
        researcher.fill("#checkout textarea[name=intended_use]", "Validating a lung nodule detector on chest CT.")
        researcher.check("#checkout input[name=accept]")
        researcher.fill("#checkout input[name=password]", "not-my-password")
        researcher.click("#checkout button:has-text('Place order')")
        expect(researcher.locator("body")).to_contain_text("password", timeout=10_000)
        assert "/orders/" not in researcher.url
        researcher.select_option("#checkout select[name=use_category]", index=1)
        researcher.fill("#checkout textarea[name=intended_use]", "Validating a lung nodule detector on chest CT.")
        researcher.check("#checkout input[name=accept]")
        researcher.check("#checkout input[name=payment_method][value=invoice]")
        researcher.fill("#checkout input[name=password]", "pass-1234567")
        researcher.click("#checkout button:has-text('Place order')")
        researcher.wait_for_url(re.compile(r".*/orders/\d+/$"))
        order_url = researcher.url
        order_id = int(order_url.rstrip("/").rsplit("/", 1)[1])

        # Provider: consents by signing (password and a fresh TOTP code).
        provider.goto(f"{base}/provider/consent/")
        provider.click(f"tr.consent-line:has-text('#{order_id}') a.button")
        provider.fill("#consent-approve input[name=password]", "pass-1234567")
        provider.fill("#consent-approve input[name=totp_code]", fresh_totp_code())
        provider.click("#consent-approve button[value=approve]")
        provider.wait_for_url(f"{base}/provider/consent/")

        # Admin: approves the contract by signing, then the credit terms; the worker delivers.
        admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/login/", lands="/admin/")
        approve_and_sign(admin, base)
        admin.goto(f"{base}/admin/orders/order/")
        admin.check(f"input[name=_selected_action][value='{order_id}']")
        admin.select_option("select[name=action]", "approve_credit")
        admin.click("button[name=index]")
        admin.wait_for_selector("text=Credit approved: 1")

        researcher.goto(f"{base}/workspace/")
        researcher.wait_for_selector("a:has-text('certificate.json')", timeout=120_000)

    # The agreement page shows both signatures and the negotiated terms.
    researcher.goto(f"{order_url}agreement/")
    agreement = researcher.inner_text("main")
    assert f"Negotiated terms: negotiation #{negotiation_url.rstrip('/').rsplit('/', 1)[1]}, version 2" in agreement
    assert "responsibility" in agreement.lower() and "approval" in agreement.lower()

    # The certificate belongs to this order and the platform's check says it is genuine.
    researcher.goto(f"{base}/workspace/")
    with researcher.expect_download() as certificate_download:
        researcher.click("a:has-text('certificate.json')")
    certificate = Path(certificate_download.value.path()).read_text()
    assert json.loads(certificate)["order"]["order_id"] == order_id
    researcher.goto(f"{base}/certificates/check/")
    researcher.fill("textarea[name=certificate]", certificate)
    researcher.click("main button[type=submit]")
    expect(researcher.locator("#certificate-result")).to_have_attribute("data-valid", "true")
    researcher.goto(f"{base}/workspace/")
    links = LINK.findall(researcher.content())
    assert links and researcher.request.get(f"{base}{links[-1]}").status == 200

    # A year and a day later the daily job ends the term: links, files and the page are gone.
    from orders.entitlements import entitlements_expire

    expired = in_thread(lambda: entitlements_expire(now=timezone.now() + timedelta(days=366)))
    assert expired["expired"] == 1 and expired["files_removed"] > 0
    assert all(researcher.request.get(f"{base}{link}").status == 404 for link in links)
    researcher.goto(f"{base}/workspace/")
    assert not LINK.findall(researcher.content())
    researcher.goto(order_url)
    assert "Ended " in researcher.inner_text("main")


def test_an_admin_revokes_access_in_the_middle_of_a_term(live_server, bob, admin_user, dua, published_dataset,
                                                         tiny_threshold, deliver, browser):
    in_thread(lambda: deliver(published_dataset, bob))  # before any page: the order, approved and delivered
    base = live_server.url
    researcher = log_in(browser, base, "bob", "pass-1234567")
    researcher.goto(f"{base}/workspace/")
    links = LINK.findall(researcher.content())
    assert links and researcher.request.get(f"{base}{links[-1]}").status == 200

    admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/login/", lands="/admin/")
    admin.goto(f"{base}/admin/orders/orderline/")
    admin.check("input[name=_selected_action]")
    admin.select_option("select[name=action]", "revoke_access")
    admin.fill("input[name=reason]", "Takedown requested by the provider")
    admin.click("button[name=index]")
    admin.wait_for_selector("text=Access revoked")

    assert all(researcher.request.get(f"{base}{link}").status == 404 for link in links)
    researcher.goto(f"{base}/workspace/")
    assert not LINK.findall(researcher.content())
    researcher.goto(f"{base}/notifications/")
    assert "Takedown requested by the provider" in researcher.inner_text("main")
