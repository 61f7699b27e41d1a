"""Every kind of page each role sees, in Chromium at a phone's (390 px) and a desktop's
(1,440 px) width: no page scrolls sideways on the phone, and axe-core finds no serious or
critical accessibility violation at either width.

One live server, one browser, one context per role (signed in by session cookie, so no
authenticator code is waited for; the login pages themselves are checked signed out). Every
finding of every page is collected and reported at once, each with the page, the width, the
axe rule and the CSS selectors at fault, or the elements sticking out past the right edge.
"""
from __future__ import annotations

from browser.a11y import a11y_context, axe_violations, describe_violations, sideways_overflow
from browser.journey import BROWSER_MARKS, in_thread

pytestmark = BROWSER_MARKS

PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1440, "height": 900}


def _world(bob, alice, admin_user, dataset, live_server) -> dict:  # noqa: ANN001
    """The pages' ids and a session cookie per role (made outside Playwright's loop)."""
    from django.conf import settings
    from django.test import Client

    from catalog.models import DatasetPreview, Series, UploadBatch
    from marketplace.models import Membership
    from orders.cart import cart_add
    from orders.models import Order
    from workspaces.models import Delivery

    order = Order.objects.filter(buyer=bob).latest("pk")
    delivery = Delivery.objects.get(order=order)
    series = Series.objects.filter(study__dataset=dataset).order_by("pk").first()
    preview = DatasetPreview.objects.filter(dataset=dataset).order_by("pk").first()
    cart_add(buyer=bob, dataset=dataset, criteria={})  # a cart with a line in it

    def cookies(user) -> list[dict]:  # noqa: ANN001
        client = Client()
        client.force_login(user)
        value = client.cookies[settings.SESSION_COOKIE_NAME].value
        return [{"name": settings.SESSION_COOKIE_NAME, "value": value, "url": live_server.url}]

    return {
        "dataset": dataset.pk, "order": order.pk, "delivery": delivery.pk, "series": series.pk,
        "preview": preview.pk,
        "buyer_org": Membership.objects.get(user=bob).organization_id,
        "batch": UploadBatch.objects.filter(dataset=dataset).latest("pk").pk,
        "cookies": {"researcher": cookies(bob), "provider": cookies(alice), "admin": cookies(admin_user)},
    }


def _pages(w: dict) -> dict[str, list[str]]:
    d = w["dataset"]
    return {
        "anonymous": ["/", "/login/", "/accounts/signup/", "/datasets/", f"/datasets/{d}/", "/no-such-page/"],
        "researcher": [
            "/", "/datasets/?modality=CT&q=chest", f"/datasets/{d}/", "/cohorts/?modality=CT", "/cart/", "/orders/",
            f"/orders/{w['order']}/", "/negotiations/", "/saved/", "/requests/", "/notifications/", "/workspace/",
            "/account/", "/organization/", f"/organization/{w['buyer_org']}/webhooks/", f"/datasets/{d}/order/",
            "/no-such-page/", f"/orders/{w['order'] + 1000}/", f"/workspace/deliveries/{w['delivery']}/",
            f"/workspace/deliveries/{w['delivery']}/series/{w['series']}/viewer/",
            f"/datasets/{d}/previews/{w['preview']}/viewer/",
        ],
        "provider": [
            "/provider/", f"/provider/datasets/{d}/", f"/provider/datasets/{d}/upload/",
            f"/provider/uploads/{w['batch']}/", "/provider/consent/", "/provider/negotiations/", "/provider/datasets/new/",
        ],
        "admin": ["/admin/", "/admin/catalog/dataset/", "/admin/orders/order/", f"/admin/catalog/dataset/{d}/change/",
                  f"/admin/catalog/dataset/{d}/reject/"],
    }


def _frame_problems(page) -> list[str]:  # noqa: ANN001
    """The frame on a phone: the first Tab reaches the skip link, which moves focus to the
    content; the menu opens, shows every link on screen and passes axe-core while open."""
    problems = []
    page.set_viewport_size(PHONE)
    page.keyboard.press("Tab")
    if page.evaluate("document.activeElement.textContent.trim()") != "Skip to content":
        problems.append("researcher / at 390 px: the first Tab does not reach the skip link")
    page.keyboard.press("Enter")
    if page.evaluate("document.activeElement.id") != "main":
        problems.append("researcher / at 390 px: the skip link does not move focus to #main")
    workspace = page.get_by_role("navigation", name="Main").get_by_role("link", name="Workspace")
    if workspace.is_visible():
        problems.append("researcher / at 390 px: the navigation is not folded into the menu")
    page.click("summary:has-text('Menu')")
    if not workspace.is_visible():
        problems.append("researcher / at 390 px: the open menu does not show its links")
    overflow, offenders = sideways_overflow(page)
    if overflow > 0:
        problems.append(f"researcher / at 390 px, menu open: scrolls sideways by {overflow} px; " + "; ".join(offenders))
    if violations := axe_violations(page):
        problems.append(describe_violations("researcher / at 390 px, menu open", violations))
    page.click("summary:has-text('Menu')")  # closed again: a wide screen shows the links all the same
    page.set_viewport_size(DESKTOP)
    if not workspace.is_visible():
        problems.append("researcher / at 1440 px: the navigation links do not show with the menu closed")
    return problems


def test_every_page_fits_a_phone_and_has_no_serious_accessibility_violation(
        live_server, tiny_threshold, bob, alice, admin_user, published_dataset, deliver, dua, browser):
    # `browser` comes last: the other fixtures write to the database before Playwright's loop starts.
    base = live_server.url
    world = in_thread(lambda: (deliver(published_dataset, bob),
                               _world(bob, alice, admin_user, published_dataset, live_server))[1])
    missing = {"/no-such-page/", f"/orders/{world['order'] + 1000}/"}  # another buyer's or no order: 404
    problems: list[str] = []
    widths: list[str] = []  # the sideways scroll of every page at 390 px, printed for the record
    checked = 0
    for role, paths in _pages(world).items():
        context = a11y_context(browser, viewport=PHONE, cookies=world["cookies"].get(role))
        page = context.new_page()
        page.set_default_timeout(30_000)
        for path in paths:
            page.set_viewport_size(PHONE)  # loaded at a phone's width, as a phone would
            response = page.goto(f"{base}{path}")
            where = f"{role} {path}"
            if path in missing:
                if response.status != 404 or not page.locator("header .brand").count():
                    problems.append(f"{where}: expected the branded 404 page, got HTTP {response.status}")
            elif response.status != 200 or role != "anonymous" and page.url.rstrip("/").endswith("/login"):
                problems.append(f"{where}: HTTP {response.status} at {page.url} (not the page itself)")
                continue
            overflow, offenders = sideways_overflow(page)
            widths.append(f"{overflow:>5} px  {where}")
            if overflow > 0:
                problems.append(f"{where} at 390 px: scrolls sideways by {overflow} px; sticking out: "
                                + "; ".join(offenders))
            for width, viewport in (("390 px", PHONE), ("1440 px", DESKTOP)):
                page.set_viewport_size(viewport)
                if violations := axe_violations(page):
                    problems.append(describe_violations(f"{where} at {width}", violations))
            checked += 1
            if role == "researcher" and path == "/":
                problems += _frame_problems(page)
        context.close()
    print("Sideways scroll at 390 px (0 or less: none):", *widths, sep="\n")
    assert checked >= 30, f"only {checked} pages were checked"
    assert not problems, f"{len(problems)} problem(s) on {checked} pages:\n" + "\n".join(problems)
