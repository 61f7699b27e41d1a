"""One click downloads a whole delivery in the browser: a ZIP that keeps the folder layout,
carries the manifest and is a valid BagIt bag; every file matches the manifest's sha256."""
from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from browser.journey import BROWSER_MARKS, in_thread, log_in

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = BROWSER_MARKS


def test_one_click_downloads_the_whole_delivery_and_every_file_matches_the_manifest(
        live_server, bob, admin_user, dua, published_dataset, tiny_threshold, deliver, browser):
    def delivered() -> tuple[int, int, int]:
        delivery = deliver(published_dataset, bob)
        return delivery.pk, delivery.order_id, delivery.files.count()

    delivery_id, order_id, file_count = in_thread(delivered)  # ORM work outside Playwright's loop
    base = live_server.url
    researcher = log_in(browser, base, "bob", "pass-1234567")
    researcher.goto(f"{base}/workspace/")
    with researcher.expect_download() as download:
        researcher.click(f"#archive-{delivery_id}")
    assert download.value.suggested_filename == f"order-{order_id}.zip"
    archive = zipfile.ZipFile(Path(download.value.path()))
    names = archive.namelist()
    manifest_name = next(n for n in names if n.endswith("manifest.csv"))
    rows = list(csv.DictReader(io.StringIO(archive.read(manifest_name).decode())))
    assert len(rows) == file_count > 0
    root = manifest_name.rsplit("manifest.csv", 1)[0]
    for row in rows:
        member = next(n for n in names if n.endswith("/" + row["path"]) or n == root + row["path"])
        assert hashlib.sha256(archive.read(member)).hexdigest() == row["sha256"], row["path"]
    assert any(n.endswith("bagit.txt") for n in names) and any(n.endswith("manifest-sha256.txt") for n in names)
