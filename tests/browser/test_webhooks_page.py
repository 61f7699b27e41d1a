"""The organization's webhook page in Chromium: readable at a phone's and a desktop's width,
and "Rotate secret" shows a new secret."""
from __future__ import annotations

from browser.journey import BROWSER_MARKS, in_thread, log_in
from browser.test_journeys import _screenshots

pytestmark = BROWSER_MARKS


def test_an_owner_rotates_a_webhook_secret_on_a_page_that_fits_a_phone(live_server, bob, browser, settings,
                                                                       tmp_path):
    from marketplace.models import Membership, WebhookEndpoint
    from marketplace.webhooks import webhook_endpoint_create

    settings.WEBHOOKS_ALLOW_PRIVATE = True

    def endpoint() -> tuple[int, int, str]:
        org = Membership.objects.get(user=bob).organization
        made = webhook_endpoint_create(organization=org, url="http://127.0.0.1:9/" + "hook/" * 20,
                                       events=[WebhookEndpoint.Event.DELIVERY_READY], acting_user=bob)
        return org.pk, made.pk, made.secret

    org_id, endpoint_id, old_secret = in_thread(endpoint)
    base = live_server.url
    page = log_in(browser, base, "bob", "pass-1234567")
    page.goto(f"{base}/organization/{org_id}/webhooks/")
    _screenshots(page, tmp_path, "webhooks")
    page.click("text=Rotate secret")
    page.wait_for_load_state()
    new_secret = in_thread(lambda: WebhookEndpoint.objects.get(pk=endpoint_id).secret)
    assert new_secret != old_secret
    assert new_secret in page.content() and old_secret not in page.content()
    _screenshots(page, tmp_path, "webhooks-rotated")
