"""What the browser journeys share: Chromium's path and flags, logging in (with TOTP),
fresh TOTP codes, and the admin's signed contract approval."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from factories.accounts import totp_code

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)"),
]

USED_TOTP_CODES: set[str] = set()


def fresh_totp_code() -> str:
    """A TOTP code not used before (each code works once): waits for the next 30 s period
    when the current code was already typed, or when the current period ends in under 5 s
    (a code typed then reaches the server in the next period, where it no longer counts)."""
    while (code := totp_code()) in USED_TOTP_CODES or time.time() % 30 > 25:
        time.sleep(1)
    USED_TOTP_CODES.add(code)
    return code


def approve_and_sign(admin, base: str) -> None:  # noqa: ANN001
    """The admin approves the newest contract through its signing form (password and a
    fresh TOTP code in the same request)."""
    admin.goto(f"{base}/admin/orders/contract/")
    admin.click("#result_list tbody tr:first-child th a")
    admin.click("#contract-approve")
    admin.fill("input[name=password]", "admin-pass-123")
    admin.fill("input[name=totp_code]", fresh_totp_code())
    admin.click("input[value='Approve and sign']")
    admin.wait_for_selector("text=Approved and signed")


def log_in(browser, base: str, username: str, password: str, *, path: str = "/login/",  # noqa: ANN001, ANN201
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
        page.fill("input[name=code]", fresh_totp_code())
        page.click("main button[type=submit]")
    page.wait_for_url(f"{base}{lands}")
    return page


def in_thread(work):  # noqa: ANN001, ANN201
    """Run ORM work outside Playwright's event loop (Django refuses it inside): what a
    scheduled job would do, on its own connection."""
    from django.db import connections

    result: dict = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if "error" in result:
        raise result["error"]
    return result.get("value")
