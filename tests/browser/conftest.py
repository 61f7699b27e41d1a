from __future__ import annotations

import pytest

from browser.journey import CHROMIUM, CHROMIUM_FLAGS


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    # inside one: request this fixture last and make no ORM calls in the test body (run
    # them in another thread: browser.journey.in_thread).
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()
