"""The provider's upload page in Chromium with a real Celery worker: files chosen and dropped
(a synthetic drop event carrying a DataTransfer), each file's upload reaching 100 % over
several requests into one batch, then the batch page's counters moving with the bar while
the worker ingests, and ending at the right numbers with the rejected files named."""
from __future__ import annotations

import base64
import re
import time

from django.db import connection

from browser.journey import BROWSER_MARKS, in_thread, log_in
from browser.test_journeys import _screenshots
from e2e.worker import celery_worker
from factories.dicom import ct_files

pytestmark = BROWSER_MARKS

DROP = """([files]) => {
  const dt = new DataTransfer();
  for (const [name, b64] of files) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], name, { type: "application/dicom" }));
  }
  const zone = document.getElementById("upload-drop");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
}"""

# One reading of the batch card: the bar, the "done / total" line and the three counters.
READ_CARD = """() => {
  const n = (s) => Number(document.querySelector(s).textContent.replace(/,/g, ""));
  const line = document.querySelector(".progress-text").textContent;
  return { width: document.querySelector("[data-progress-url] .progress > div").style.width, line: line,
           ok: n("[data-count=ok]"), failed: n("[data-count=failed]"), remaining: n("[data-count=remaining]") };
}"""


def test_a_provider_drops_and_chooses_files_and_follows_their_ingestion(live_server, alice, dataset, tmp_path,
                                                                       browser):
    base = live_server.url
    folder = tmp_path / "scans"
    folder.mkdir()
    studies = ct_files(n_patients=4, n_instances=40, seed=5)  # 160 files: two requests of at most 100
    chosen = []
    for index, (name, data) in enumerate(studies[:-2]):
        path = folder / f"im{index:04d}.dcm"
        path.write_bytes(data)
        chosen.append(str(path))
    (folder / "notes.txt").write_text("not a DICOM file")
    (folder / "cut.dcm").write_bytes(studies[0][1][:300])
    chosen += [str(folder / "notes.txt"), str(folder / "cut.dcm")]
    dropped = [(f"dropped{i}.dcm", base64.b64encode(data).decode()) for i, (_, data) in enumerate(studies[-2:])]

    with celery_worker(connection.settings_dict):
        page = log_in(browser, base, "alice", "pass-1234567")
        page.goto(f"{base}/provider/datasets/{dataset.pk}/")
        page.set_input_files("input[name=files]", chosen)
        page.evaluate(DROP, [dropped])
        assert page.locator("#upload-files li").count() == 162
        assert re.match(r"162 file\(s\), 1\.\d MB", page.inner_text("#upload-summary"))
        assert "dropped1.dcm" in page.inner_text("#upload-files")

        # Slow the upload down (Chromium's network emulation) to see it under way, and hold the
        # last step (closing the batch) to look at the finished upload first.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": 600_000})
        held = []
        page.route("**/provider/uploads/*/close/", lambda route: held.append(route))
        page.click("button:has-text('Upload')")
        page.wait_for_function("() => /left$/.test(document.querySelector('#upload-rate').textContent)")
        rate = page.inner_text("#upload-rate")
        assert re.match(r"\d+ % · [\d.]+ (bytes|KB|MB) of 1\.\d MB · [\d.]+ (bytes|KB|MB)/s · .+ left$", rate), rate
        part = page.evaluate("() => [...document.querySelectorAll('#upload-files progress')].map(p => p.value)")
        assert part[0] == 100 and part[-1] < 100, part  # the first files are sent, the last not yet
        page.wait_for_function("() => document.querySelector('#upload-rate').textContent.includes('Every file was sent')",
                               timeout=60_000)
        values = page.evaluate("() => [...document.querySelectorAll('#upload-files progress')].map(p => p.value)")
        assert values == [100] * 162
        assert page.get_attribute("#upload-chosen [role=progressbar]", "aria-valuenow") == "100"
        assert page.locator("#upload-files li.sent").count() == 162
        assert page.text_content("#upload-announce") == "Uploaded 100 %."
        _screenshots(page, tmp_path, "upload-sent")
        while not held:
            page.wait_for_timeout(100)
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
        held[0].continue_()

        page.wait_for_url(re.compile(r".*/provider/uploads/\d+/$"))
        batch_id = int(re.search(r"/uploads/(\d+)/", page.url).group(1))
        requests = in_thread(lambda: _received(batch_id))
        assert requests == (162, 1)  # every file in one batch, the empty one excepted: none here

        # While the worker ingests, the counters move with the bar (same figures).
        page.wait_for_function("() => { const ok = +document.querySelector('[data-count=ok]').textContent;"
                               " const left = +document.querySelector('[data-count=remaining]').textContent;"
                               " return ok > 0 && left > 0; }", timeout=120_000)
        card = page.evaluate(READ_CARD)
        done, total = map(int, re.search(r"(\d+) / (\d+) files", card["line"]).groups())
        assert total == 162
        assert card["ok"] + card["failed"] == done and card["remaining"] == total - done
        assert card["width"] == f"{100 * done // total}%"
        assert re.fullmatch(r"Ingesting: [\d,]+ of 162 files, [\d,]+ ingested, [\d,]+ rejected\.",
                            page.text_content("[data-announce]"))
        _screenshots(page, tmp_path, "upload-ingesting")

        page.wait_for_selector("text=160 ingested", timeout=120_000)  # the page reloads when done
        card = page.evaluate(READ_CARD)
        assert (card["ok"], card["failed"], card["remaining"], card["width"]) == (160, 2, 0, "100%")
        html = page.content()
        assert "notes.txt" in html and "not a DICOM file" in html and "cut.dcm" in html
        _screenshots(page, tmp_path, "upload-done")


def _received(batch_id: int) -> tuple[int, int]:
    from catalog.models import UploadBatch

    batch = UploadBatch.objects.get(pk=batch_id)
    return batch.files.count(), UploadBatch.objects.filter(dataset_id=batch.dataset_id).count()


def test_cancelling_an_upload_keeps_nothing(live_server, alice, dataset, tmp_path, browser):
    paths = []
    for index, (_, data) in enumerate(ct_files(n_patients=1, n_instances=40, seed=6)):
        path = tmp_path / f"im{index:03d}.dcm"
        path.write_bytes(data)
        paths.append(str(path))
    page = log_in(browser, live_server.url, "alice", "pass-1234567")
    page.goto(f"{live_server.url}/provider/datasets/{dataset.pk}/")
    page.set_input_files("input[name=files]", paths)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 50_000})
    page.click("button:has-text('Upload')")
    page.wait_for_function("() => /left$/.test(document.querySelector('#upload-rate').textContent)")
    page.click("#upload-cancel")
    page.wait_for_function("() => document.querySelector('#upload-rate').textContent.startsWith('Cancelled')")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    assert page.is_hidden("#upload-cancel") and page.is_enabled("#upload-submit")
    assert page.get_attribute("#upload-chosen [role=progressbar]", "aria-valuenow") == "0"

    def batches() -> int:
        from catalog.models import UploadBatch

        return UploadBatch.objects.filter(dataset_id=dataset.pk).count()

    deadline = time.monotonic() + 10
    while in_thread(batches) and time.monotonic() < deadline:  # the discard request is on its way
        page.wait_for_timeout(200)
    assert in_thread(batches) == 0
