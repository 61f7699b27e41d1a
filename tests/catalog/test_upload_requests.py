"""The upload page's JSON steps: one batch filled over several requests (open, add files,
close or cancel), the batch's figures while it is ingested, and clear 4xx answers for a
wrong, foreign or closed batch."""
from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

import storage
from catalog.ingestion.ingest import upload_batch_ingest, upload_file_ingest
from catalog.ingestion.upload_batches import upload_batch_recount, upload_batch_transition, upload_batches_recover_stuck
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import Instance, UploadBatch, UploadFile
from demo.synthetic import write_zip
from factories.dicom import ct_files
from marketplace.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def dicoms(n: int, seed: int) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name.replace("/", "_"), data, content_type="application/dicom")
            for name, data in ct_files(n_patients=1, n_instances=n, seed=seed)]


def open_batch(client, dataset) -> dict:  # noqa: ANN001
    response = client.post(reverse("upload_open", args=[dataset.pk]))
    assert response.status_code == 201, response.content
    return response.json()


# ---- the figures while a batch is ingested -------------------------------------------------
def test_the_progress_answer_and_the_page_agree_mid_batch(alice_client, alice, dataset):
    files = [(f.name, f) for f in dicoms(3, seed=31)] + [("notes.txt", io.BytesIO(b"not a DICOM file at all")),
                                                          ("scan.dcm", io.BytesIO(b"garbage" * 50))]
    batch = upload_batch_create(dataset=dataset, files=files, acting_user=alice)
    upload_batch_transition(batch=batch, to=UploadBatch.Status.RUNNING, acting_user=None, reason="test")
    # What the worker does: decide some files for real, then recount (its once-a-second tick).
    rows = {row.name: row.pk for row in batch.files.all()}
    decided = [rows["notes.txt"], *[pk for name, pk in rows.items() if name.endswith(".dcm") and name != "scan.dcm"][:2]]
    for pk in decided:
        upload_file_ingest(upload_file_id=pk)
    upload_batch_recount(batch_id=batch.pk)

    figures = alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()
    assert figures == {"status": "running", "status_label": "Ingesting", "done": 3, "total": 5, "ok": 2,
                       "failed": 1, "remaining": 2, "percent": 60}
    html = alice_client.get(reverse("upload_batch_detail", args=[batch.pk])).content.decode()
    assert "Ingesting: 3 / 5 files" in html
    assert 'style="width: 60%"' in html and 'aria-valuenow="60"' in html
    assert re.search(r'<b data-count="ok">2</b> ingested · <b data-count="failed">1</b> rejected\s*'
                     r'· <b data-count="remaining">2</b> remaining', html)
    assert "notes.txt" in html  # a rejected file is named with its reason

    upload_batch_ingest(batch_id=batch.pk)  # the rest, and the batch ends
    figures = alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()
    assert (figures["status"], figures["ok"], figures["failed"], figures["remaining"]) == ("done", 3, 2, 0)


# ---- several requests into one batch ---------------------------------------------------------
def test_files_sent_in_several_requests_land_in_one_batch(alice_client, alice, dataset,
                                                          django_capture_on_commit_callbacks):
    steps = open_batch(alice_client, dataset)
    batch = UploadBatch.objects.get(pk=steps["batch"])
    assert batch.status == UploadBatch.Status.UPLOADING

    first = alice_client.post(steps["files_url"], {"files": dicoms(2, seed=41)})
    assert first.status_code == 200
    assert first.json() == {"received": 2, "total": 2, "empty": []}
    archive = SimpleUploadedFile("more.zip", write_zip(ct_files(n_patients=1, n_instances=2, seed=42)))
    second = alice_client.post(steps["files_url"], {"files": [archive, SimpleUploadedFile("empty.dcm", b"")]})
    assert second.json() == {"received": 1, "total": 3, "empty": ["empty.dcm"]}
    # Nothing is ingested while the batch is open.
    assert alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()["status"] == "uploading"

    with django_capture_on_commit_callbacks() as queued:
        closed = alice_client.post(steps["close_url"])
    assert closed.status_code == 200
    assert closed.json() == {"url": reverse("upload_batch_detail", args=[batch.pk])}
    assert len(queued) == 1  # one ingestion task
    batch.refresh_from_db()
    assert (batch.status, batch.total_files) == (UploadBatch.Status.QUEUED, 3)
    assert AuditEvent.objects.filter(action="upload.create", object_id=str(batch.pk)).exists()

    upload_batch_ingest(batch_id=batch.pk)
    figures = alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()
    assert (figures["status"], figures["total"], figures["ok"], figures["failed"]) == ("done", 4, 4, 0)
    assert Instance.objects.filter(dataset=dataset).count() == 4


def test_a_closed_batch_takes_no_more_files(alice_client, dataset):
    steps = open_batch(alice_client, dataset)
    alice_client.post(steps["files_url"], {"files": dicoms(1, seed=43)})
    assert alice_client.post(steps["close_url"]).status_code == 200

    late = alice_client.post(steps["files_url"], {"files": dicoms(1, seed=44)})
    assert late.status_code == 409
    assert late.json()["code"] == "upload_closed"
    assert "is closed" in late.json()["error"] and "start a new upload" in late.json()["error"]
    again = alice_client.post(steps["close_url"])
    assert again.status_code == 409
    assert UploadBatch.objects.get(pk=steps["batch"]).files.count() == 1


def test_a_batch_made_by_the_plain_form_post_is_closed(alice_client, alice, dataset):
    batch = upload_batch_create(dataset=dataset, files=[(f.name, f) for f in dicoms(1, seed=45)], acting_user=alice)
    response = alice_client.post(reverse("upload_batch_files", args=[batch.pk]), {"files": dicoms(1, seed=46)})
    assert response.status_code == 409
    assert batch.files.count() == 1


def test_closing_an_empty_batch_is_refused(alice_client, dataset):
    steps = open_batch(alice_client, dataset)
    response = alice_client.post(steps["close_url"])
    assert response.status_code == 400
    assert response.json()["code"] == "no_files"
    assert UploadBatch.objects.get(pk=steps["batch"]).status == UploadBatch.Status.UPLOADING


def test_bad_files_are_refused_with_the_reason_and_nothing_is_stored(alice_client, dataset):
    steps = open_batch(alice_client, dataset)
    evil = SimpleUploadedFile("evil.zip", write_zip([("../evil.dcm", b"x" * 200)]))
    response = alice_client.post(steps["files_url"], {"files": [evil]})
    assert response.status_code == 400
    assert "points outside the archive" in response.json()["error"]
    nothing = alice_client.post(steps["files_url"], {})
    assert nothing.status_code == 400
    assert nothing.json()["error"].startswith("Choose at least one")
    assert not UploadFile.objects.filter(batch_id=steps["batch"]).exists()


def test_a_wrong_or_foreign_batch_is_not_found(client, alice, dataset, second_provider_dataset, bob):
    foreign = second_provider_dataset.upload_batches.get()
    foreign_files = foreign.files.count()
    client.force_login(alice)
    for batch_id in (foreign.pk, 999_999):
        for name in ("upload_batch_files", "upload_batch_close", "upload_batch_cancel"):
            response = client.post(reverse(name, args=[batch_id]), {"files": dicoms(1, seed=47)})
            assert response.status_code == 404, (name, batch_id)
            assert response.json() == {"error": "Upload not found.", "code": "not_found"}
    assert foreign.files.count() == foreign_files
    # Nor may a buyer open a batch in alice's dataset, or reach her open one.
    steps = open_batch(client, dataset)
    client.force_login(bob)
    assert client.post(reverse("upload_open", args=[dataset.pk])).status_code == 404
    assert client.post(steps["files_url"], {"files": dicoms(1, seed=48)}).status_code == 404
    assert not UploadFile.objects.filter(batch_id=steps["batch"]).exists()


def test_the_steps_answer_only_posts(alice_client, dataset):
    assert alice_client.get(reverse("upload_open", args=[dataset.pk])).status_code == 405
    steps = open_batch(alice_client, dataset)
    assert alice_client.get(steps["files_url"]).status_code == 405


def test_no_batch_opens_in_a_published_dataset(alice_client, published_dataset):
    response = alice_client.post(reverse("upload_open", args=[published_dataset.pk]))
    assert response.status_code == 400
    assert response.json()["code"] == "dataset_published"


def test_cancelling_removes_the_batch_and_its_quarantined_files(alice_client, dataset,
                                                                django_capture_on_commit_callbacks):
    steps = open_batch(alice_client, dataset)
    alice_client.post(steps["files_url"], {"files": dicoms(2, seed=49)})
    keys = list(UploadFile.objects.filter(batch_id=steps["batch"]).values_list("quarantine_key", flat=True))
    assert keys and all(storage.exists(k) for k in keys)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(steps["cancel_url"])
    assert response.json() == {"url": reverse("dataset_manage", args=[dataset.pk])}
    assert not UploadBatch.objects.filter(pk=steps["batch"]).exists()
    assert not any(storage.exists(k) for k in keys)
    assert AuditEvent.objects.filter(action="upload.cancel", object_id=str(steps["batch"])).exists()


def test_the_sweep_fails_a_batch_the_page_stopped_sending_to(alice_client, dataset):
    steps = open_batch(alice_client, dataset)
    alice_client.post(steps["files_url"], {"files": dicoms(1, seed=50)})
    fresh = open_batch(alice_client, dataset)
    UploadBatch.objects.filter(pk=steps["batch"]).update(progressed=timezone.now() - timedelta(hours=2))

    result = upload_batches_recover_stuck()

    assert result.failed == [steps["batch"]]
    abandoned = UploadBatch.objects.get(pk=steps["batch"])
    assert abandoned.status == UploadBatch.Status.FAILED
    assert "stopped before every file was sent" in abandoned.error
    assert abandoned.can_retry()  # what was received can still be ingested
    assert UploadBatch.objects.get(pk=fresh["batch"]).status == UploadBatch.Status.UPLOADING
