"""The image viewer in Chromium: opened from the dataset page, the slider changes the frame,
a window preset and zoom change the picture, and the page fits a phone."""
from __future__ import annotations

import re

import pytest

from browser.journey import BROWSER_MARKS, in_thread
from browser.test_journeys import _screenshots

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = BROWSER_MARKS


def test_a_visitor_scrolls_windows_and_zooms_a_preview_series(live_server, published_dataset, tmp_path, browser):
    from catalog.models import DatasetPreview

    dataset_id = published_dataset.pk
    frames = in_thread(lambda: DatasetPreview.objects.filter(dataset_id=dataset_id).first().instance.series
                       .instances.count())
    base = live_server.url
    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}/datasets/{dataset_id}/")
    page.click(".previews a >> nth=0")
    page.wait_for_selector("#viewer")
    image = page.locator("#viewer-image")
    _loaded(page)
    first_src = image.get_attribute("src")
    assert first_src.endswith(f"/{frames // 2}.png")
    _screenshots(page, tmp_path, "viewer")
    page.fill("#viewer-frame", "0")  # the slider's input event asks for another frame
    expect(image).to_have_attribute("src", re.compile(r"/0\.png$"))
    assert page.inner_text("#viewer-frame-label") == "1"
    page.locator("#viewer-stage").focus()
    page.keyboard.press("End")
    expect(image).to_have_attribute("src", re.compile(rf"/{frames - 1}\.png$"))
    page.select_option("#viewer-preset", label="Lung (-600/1500)")
    expect(image).to_have_attribute("src", re.compile(r"c=-600&w=1500$"))
    assert page.input_value("#viewer-center") == "-600" and page.input_value("#viewer-width") == "1500"
    _loaded(page)
    page.click("#viewer-zoom-in")
    assert page.inner_text("#viewer-zoom") == "125%"
    assert "scale(1.25)" in image.get_attribute("style")
    _screenshots(page, tmp_path, "viewer-lung-zoomed")
    page.click("#viewer-reset")
    assert page.inner_text("#viewer-zoom") == "100%" and page.input_value("#viewer-center") == "40"


def _loaded(page) -> None:  # noqa: ANN001
    """Wait until the frame picture has loaded (the CSP forbids wait_for_function's eval)."""
    for _ in range(100):
        if page.locator("#viewer-image").evaluate("img => img.complete && img.naturalWidth > 0"):
            return
        page.wait_for_timeout(100)
    raise AssertionError("the frame never loaded")
