"""The admin's work queue in Chromium: a dataset waits on the admin index, the admin rejects
it with a reason from the queue, and its provider reads the reason on the dataset's page.
Both pages are readable at a phone's and a desktop's width."""
from __future__ import annotations

from browser.journey import BROWSER_MARKS, in_thread, log_in
from browser.test_journeys import _screenshots
from factories.dicom import ct_files

pytestmark = BROWSER_MARKS

REASON = "The study descriptions name the referring hospital; remove them and upload again."


def test_admin_rejects_a_waiting_dataset_from_the_queue_and_the_provider_reads_why(
        live_server, alice, admin_user, dataset, ingest, tmp_path, browser):
    from catalog.datasets.services import dataset_submit_for_review
    from catalog.models import Dataset

    def submit() -> int:
        ingest(dataset, ct_files())
        return dataset_submit_for_review(dataset=dataset, acting_user=alice).pk

    dataset_id = in_thread(submit)
    base = live_server.url
    admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/", lands="/admin/")
    queue = admin.locator("#queue-datasets")
    assert "Chest CT screening" in queue.inner_text() and "Oldest waiting" in queue.inner_text()
    _screenshots(admin, tmp_path, "admin-queue")
    queue.locator("a.queue-reject").first.click()
    admin.fill("textarea[name=reason]", REASON)
    _screenshots(admin, tmp_path, "admin-reject")
    admin.click("input[value='Reject with this reason']")
    admin.wait_for_url(f"{base}/admin/")
    assert REASON in admin.inner_text(".messagelist")
    assert "Nothing waiting." in admin.inner_text("#queue-datasets")
    status = in_thread(lambda: Dataset.objects.values_list("status", "rejection_reason").get(pk=dataset_id))
    assert status == (Dataset.Status.DRAFT, REASON)

    provider = log_in(browser, base, "alice", "pass-1234567")
    provider.goto(f"{base}/notifications/")
    assert REASON in provider.inner_text("main")
    provider.goto(f"{base}/provider/datasets/{dataset_id}/")
    assert REASON in provider.inner_text("#dataset-rejection")
    _screenshots(provider, tmp_path, "dataset-rejected")
