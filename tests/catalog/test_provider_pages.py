"""Provider pages: create a dataset, upload files, follow the batch; nobody else gets in."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.ingestion.ingest import upload_batch_ingest
from catalog.models import Dataset, Instance, UploadBatch, UploadFile
from demo.synthetic import write_zip
from factories.dicom import ct_files
from marketplace.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def dicom_uploads(n_instances: int = 2, seed: int = 7) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name.replace("/", "_"), data, content_type="application/dicom")
            for name, data in ct_files(n_patients=1, n_instances=n_instances, seed=seed)]


def upload(client, dataset: Dataset, files: list[SimpleUploadedFile]):  # noqa: ANN001, ANN201
    return client.post(reverse("dataset_upload", args=[dataset.pk]), {"files": files})


def flash_messages(response) -> list[str]:  # noqa: ANN001
    return [str(m) for m in response.context["messages"]] if response.context else []


# ---- creating a dataset ------------------------------------------------------------------
def test_it_creates_a_dataset_through_the_form(alice_client, alice, provider):
    assert alice_client.get(reverse("dataset_new")).status_code == 200
    response = alice_client.post(reverse("dataset_new"), {
        "title": "Knee MRI", "description": "Sagittal PD", "licence_text": "Research only",
        "price": "7.50", "currency": "EUR",
    })
    dataset = Dataset.objects.get(title="Knee MRI")
    assert response.status_code == 302
    assert response.url == reverse("dataset_manage", args=[dataset.pk])
    assert dataset.provider == provider
    assert dataset.created_by == alice
    assert dataset.status == Dataset.Status.DRAFT
    assert (dataset.price_per_study, dataset.currency) == (Decimal("7.50"), "EUR")
    assert dataset.burned_in_risk_accepted is False
    assert AuditEvent.objects.filter(action="dataset.create", object_id=str(dataset.pk), actor=alice).exists()

    page = alice_client.get(response.url)
    assert page.status_code == 200
    assert "Knee MRI" in page.content.decode()
    assert "No uploads yet." in page.content.decode()


def test_it_refuses_a_negative_price_in_the_form(alice_client):
    response = alice_client.post(reverse("dataset_new"), {"title": "Cheap", "price": "-1",
                                                          "currency": "USD"})
    assert response.status_code == 400
    assert "cannot be negative" in response.content.decode()
    assert not Dataset.objects.filter(title="Cheap").exists()


@pytest.mark.parametrize("who", ["bob", "charlie"])
def test_it_gives_404_to_buyers_on_the_new_dataset_page(client, who, request):
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("dataset_new")).status_code == 404
    assert client.post(reverse("dataset_new"), {"title": "x", "price": "1", "currency": "USD"}
                       ).status_code == 404
    assert not Dataset.objects.exists()


# ---- uploading -------------------------------------------------------------------------
def test_it_uploads_files_and_redirects_to_the_queued_batch(alice_client, alice, dataset):
    response = upload(alice_client, dataset, dicom_uploads(n_instances=3))

    batch = UploadBatch.objects.get(dataset=dataset)
    assert response.status_code == 302
    assert response.url == reverse("upload_batch_detail", args=[batch.pk])
    # the worker has not run: on_commit callbacks do not fire inside a test transaction
    assert batch.status == UploadBatch.Status.QUEUED
    assert batch.total_files == 3
    assert batch.uploaded_by == alice
    assert batch.files.filter(status=UploadFile.Status.PENDING).count() == 3

    progress = alice_client.get(reverse("upload_batch_progress", args=[batch.pk]))
    assert progress.json() == {"status": "queued", "status_label": "Queued", "done": 0, "total": 3, "ok": 0,
                               "failed": 0, "remaining": 3, "percent": 0}

    upload_batch_ingest(batch_id=batch.pk)

    progress = alice_client.get(reverse("upload_batch_progress", args=[batch.pk]))
    assert progress.status_code == 200
    assert progress.json() == {"status": "done", "status_label": "Done", "done": 3, "total": 3, "ok": 3,
                               "failed": 0, "remaining": 0, "percent": 100}
    page = alice_client.get(response.url).content.decode()
    assert "every file was ingested" in page
    assert Instance.objects.filter(dataset=dataset).count() == 3


def test_it_shows_rejected_files_with_their_reasons_on_the_batch_page(alice_client, dataset):
    files = [*dicom_uploads(n_instances=2),
             SimpleUploadedFile("report.pdf", b"%PDF-1.4 not an image"),
             SimpleUploadedFile("cut.dcm", ct_files(n_patients=1, n_instances=1, seed=3)[0][1][:400])]
    response = upload(alice_client, dataset, files)
    batch = UploadBatch.objects.get(dataset=dataset)
    upload_batch_ingest(batch_id=batch.pk)

    page = alice_client.get(response.url)
    assert page.status_code == 200
    html = page.content.decode()
    for name in ("report.pdf", "cut.dcm"):
        rejected = batch.files.get(name=name)
        assert rejected.status == UploadFile.Status.REJECTED
        assert f"<td>{name}</td>" in html
        assert rejected.reason and rejected.reason in html
    assert '<b data-count="ok">2</b> ingested' in html and '<b data-count="failed">2</b> rejected' in html
    assert alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()["failed"] == 2


def test_it_uploads_a_zip_through_the_page(alice_client, dataset):
    archive = SimpleUploadedFile("scans.zip", write_zip(ct_files(n_patients=2, n_instances=2)),
                                 content_type="application/zip")
    response = upload(alice_client, dataset, [archive])
    batch = UploadBatch.objects.get(dataset=dataset)
    assert response.status_code == 302
    upload_batch_ingest(batch_id=batch.pk)
    progress = alice_client.get(reverse("upload_batch_progress", args=[batch.pk])).json()
    assert (progress["status"], progress["total"], progress["ok"], progress["failed"]) == ("done", 4, 4, 0)
    dataset.refresh_from_db()
    assert dataset.study_count == 2


def test_it_shows_an_unsafe_zip_error_on_the_manage_page_and_stores_nothing(alice_client, dataset):
    archive = SimpleUploadedFile("evil.zip", write_zip([("../evil.dcm", b"x" * 200)]))
    response = upload(alice_client, dataset, [archive])
    assert response.status_code == 302
    assert response.url == reverse("dataset_manage", args=[dataset.pk])
    page = alice_client.get(response.url)
    assert any("points outside the archive" in m for m in flash_messages(page))
    assert not UploadBatch.objects.filter(dataset=dataset).exists()


def test_it_asks_for_a_file_when_the_upload_is_empty(alice_client, dataset):
    response = alice_client.post(reverse("dataset_upload", args=[dataset.pk]), {})
    assert response.status_code == 302
    assert response.url == reverse("dataset_manage", args=[dataset.pk])
    page = alice_client.get(response.url)
    assert any(m.startswith("Choose at least one") for m in flash_messages(page))
    assert not UploadBatch.objects.exists()


def test_it_refuses_uploads_into_a_published_dataset(alice_client, published_dataset):
    response = upload(alice_client, published_dataset, dicom_uploads(n_instances=1, seed=44))
    assert response.status_code == 302
    page = alice_client.get(response.url)
    assert any("This dataset is published" in m for m in flash_messages(page))
    assert published_dataset.upload_batches.count() == 1  # only the fixture's own


def test_it_submits_an_ingested_dataset_for_review_from_the_manage_page(alice_client, dataset, ingest):
    url = reverse("dataset_manage", args=[dataset.pk])
    alice_client.post(url, {"submit_review": "1"})
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DRAFT  # no images yet

    ingest(dataset, ct_files(n_patients=1, n_instances=1))
    response = alice_client.post(url, {"submit_review": "1"})
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.IN_REVIEW


# ---- nobody else gets in -----------------------------------------------------------------
@pytest.fixture
def alices_batch(dataset, alice_client):
    upload(alice_client, dataset, [*dicom_uploads(n_instances=1), SimpleUploadedFile("MRN123456_bad.txt", b"x")])
    batch = UploadBatch.objects.get(dataset=dataset)
    upload_batch_ingest(batch_id=batch.pk)
    alice_client.logout()
    return batch


@pytest.mark.parametrize("who", ["bob", "charlie"])
def test_it_gives_404_to_other_users_on_alices_provider_pages(client, dataset, alices_batch, who, request):
    client.force_login(request.getfixturevalue(who))
    for url in (reverse("dataset_manage", args=[dataset.pk]),
                reverse("dataset_upload", args=[dataset.pk]),
                reverse("upload_batch_detail", args=[alices_batch.pk]),
                reverse("upload_batch_progress", args=[alices_batch.pk])):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"MRN123456" not in response.content

    response = upload(client, dataset, dicom_uploads(n_instances=1, seed=8))
    assert response.status_code == 404
    response = client.post(reverse("dataset_manage", args=[dataset.pk]),
                           {"save": "1", "ds-title": "Hijacked", "ds-price": "0", "ds-currency": "USD"})
    assert response.status_code == 404
    dataset.refresh_from_db()
    assert dataset.title == "Chest CT screening"
    assert UploadBatch.objects.filter(dataset=dataset).count() == 1


def test_it_sends_anonymous_visitors_to_log_in_from_provider_pages(client, dataset, alices_batch):
    for url in (reverse("dataset_manage", args=[dataset.pk]),
                reverse("dataset_upload", args=[dataset.pk]),
                reverse("upload_batch_detail", args=[alices_batch.pk]),
                reverse("upload_batch_progress", args=[alices_batch.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
