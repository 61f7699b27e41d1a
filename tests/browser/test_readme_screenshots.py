"""The README's three screenshots, from a live server: the researcher's cohort builder, the
provider's upload page with files chosen, the admin's work queue.

`make screenshots` runs this with SCREENSHOTS_DIR=docs/screenshots to refresh the images
the README shows; `make test` runs it into a temporary folder, so the pages it shows keep
working. Viewport-size images at a desktop's width (not full pages: they stay small)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser.journey import BROWSER_MARKS, in_thread, log_in
from demo.synthetic import write_zip
from factories.dicom import ct_files

pytestmark = BROWSER_MARKS

DESKTOP = {"width": 1440, "height": 900}


@pytest.fixture
def shots_dir(tmp_path) -> Path:
    directory = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def cohort_catalog(make_member, provider):
    """Two providers' published CT and MR datasets: enough studies that no count is hidden."""
    from decimal import Decimal

    from catalog.models import Dataset, Study
    from catalog.search.memory.snapshots import snapshot_refresh
    from marketplace.models import Organization

    _, delta = make_member("dave", "Delta Scans", Organization.Kind.PROVIDER)
    for org, title, modality, body, price in [(provider, "Chest CT screening", "CT", "CHEST", "3.00"),
                                              (delta, "Brain MR follow-up", "MR", "BRAIN", "4.50")]:
        dataset = Dataset.objects.create(provider=org, title=title, status=Dataset.Status.PUBLISHED,
                                         price_per_study=Decimal(price), allow_study_browsing=True,
                                         modalities=[modality], body_parts=[body])
        Study.objects.bulk_create([
            Study(dataset=dataset, study_uid=f"2.25.{dataset.pk}.{i}", pseudo_patient_id=f"{title}-{i % 90}",
                  patient_sex="FM"[i % 2], age_band=["30-39", "40-49", "50-59", "60-69", "70-79"][i % 5],
                  modalities=[modality], body_part=body, manufacturer=["GE", "SIEMENS", "PHILIPS"][i % 3],
                  instance_count=1)
            for i in range(180)])
        snapshot_refresh(dataset_id=dataset.pk)


def _save(page, directory: Path, name: str) -> Path:  # noqa: ANN001
    page.set_viewport_size(DESKTOP)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_the_readme_screenshots(live_server, bob, alice, admin_user, dataset, ingest, cohort_catalog, shots_dir,
                                tmp_path, browser):
    from decimal import Decimal

    from catalog.datasets.services import dataset_create, dataset_submit_for_review

    def prepare() -> int:
        """A dataset waiting for the admin, and a new draft for the upload page."""
        ingest(dataset, ct_files(n_patients=3, n_instances=1, seed=5))
        dataset_submit_for_review(dataset=dataset, acting_user=alice)
        return dataset_create(provider=dataset.provider, acting_user=alice, title="Knee MR 2026",
                              description="Knee MR, 3T", price_per_study=Decimal("8.00")).pk

    draft = in_thread(prepare)
    base = live_server.url

    researcher = log_in(browser, base, "bob", "pass-1234567")
    researcher.goto(f"{base}/cohorts/?sex=F&age_band=40-49&age_band=50-59&age_band=60-69")
    assert "studies" in researcher.inner_text("#cohort-total")
    cohort = _save(researcher, shots_dir, "researcher-cohort")

    provider = log_in(browser, base, "alice", "pass-1234567")
    provider.goto(f"{base}/provider/datasets/{draft}/")
    files = []
    for i, (name, data) in enumerate(ct_files(n_patients=4, n_instances=1, seed=9)):
        path = tmp_path / f"knee-{i}.dcm"
        path.write_bytes(data)
        files.append(str(path))
    archive = tmp_path / "knee-mr-batch-2.zip"
    archive.write_bytes(write_zip(ct_files(n_patients=2, n_instances=1, seed=10)))
    provider.set_input_files("input[name=files]", [*files, str(archive)])
    assert "knee-mr-batch-2.zip" in provider.inner_text("#upload-files")
    upload = _save(provider, shots_dir, "provider-upload")

    admin = log_in(browser, base, "admin", "admin-pass-123", path="/admin/", lands="/admin/")
    assert "Chest CT screening" in admin.inner_text("#queue-datasets")
    queue = _save(admin, shots_dir, "admin-queue")

    for image in (cohort, upload, queue):
        assert image.stat().st_size < 400_000, f"{image.name} is {image.stat().st_size:,} bytes"
