"""The whole product through its pages and a real Celery worker process.

upload (zip, web form) → worker ingestion with de-identification → submit → admin publishes
→ researcher searches and orders → admin approves the contract → worker delivery →
download through a signed link, sha256 checked against the manifest.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from catalog.models import Dataset, UploadBatch
from demo.synthetic import fake_patients, make_instance, to_bytes, write_zip
from e2e.worker import celery_worker, wait_for
from factories.accounts import totp_code
from factories.dicom import ct_files
from factories.orders import USE
from orders.models import Contract, Order
from workspaces.models import Delivery

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _client_for(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_the_whole_flow_through_a_real_worker(alice, bob, admin_user, dua, monkeypatch):
    # The worker spreads the batch over chunk tasks of 3 files; the last one closes it.
    monkeypatch.setenv("INGEST_CHUNK_FILES", "3")
    # 12 patients: at least the default disclosure threshold (11), so the dataset can be sold.
    files = ct_files(n_patients=12, n_instances=1, seed=11)
    patient = fake_patients(1, seed=99)[0]
    truncated = to_bytes(make_instance(patient=patient, modality="CT", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
                                       sop_uid="1.2.3.4.5.6"))[:400]
    provider_web, researcher_web, admin_web = _client_for(alice), _client_for(bob), _client_for(admin_user)

    with celery_worker(connection.settings_dict):
        # Provider creates a dataset and uploads a zip plus two bad files.
        response = provider_web.post("/provider/datasets/new/", {
            "title": "E2E chest CT", "description": "Chest CT for the end-to-end test", "licence_text": "research",
            "price": "12.50", "currency": "USD"})
        assert response.status_code == 302, response.content[:500]
        dataset = Dataset.objects.get(title="E2E chest CT")
        upload = [SimpleUploadedFile("studies.zip", write_zip(files), content_type="application/zip"),
                  SimpleUploadedFile("notes.txt", b"not a dicom file"),
                  SimpleUploadedFile("cut.dcm", truncated)]
        response = provider_web.post(f"/provider/datasets/{dataset.pk}/upload/", {"files": upload})
        assert response.status_code == 302
        batch = UploadBatch.objects.get(dataset=dataset)

        def batch_done():  # noqa: ANN202
            progress = provider_web.get(f"/provider/uploads/{batch.pk}/progress/").json()
            return progress if progress["status"] == "done" else None

        progress = wait_for(batch_done, what="worker ingestion")
        assert progress["ok"] == 12 and progress["failed"] == 2
        page = provider_web.get(f"/provider/uploads/{batch.pk}/").content.decode()
        assert "notes.txt" in page and "cut.dcm" in page

        # Submit for review; the admin publishes in Django admin.
        provider_web.post(f"/provider/datasets/{dataset.pk}/", {"submit_review": "1"})
        response = admin_web.post("/admin/catalog/dataset/", {
            "action": "publish", "_selected_action": [dataset.pk]})
        assert response.status_code == 302
        dataset.refresh_from_db()
        assert dataset.status == Dataset.Status.PUBLISHED

        # The researcher finds it by keyword and facet, and orders the female patients' studies or all.
        page = researcher_web.get("/datasets/", {"q": "chest", "modality": "CT"}).content.decode()
        assert "E2E chest CT" in page
        api = researcher_web.get("/api/datasets/", {"modality": "CT"}).json()
        assert [d["id"] for d in api["results"]] == [dataset.pk]
        quote_page = researcher_web.get(f"/datasets/{dataset.pk}/order/").content.decode()
        assert "150.00" in quote_page  # 12 studies × 12.50
        response = researcher_web.post(f"/datasets/{dataset.pk}/order/", {})  # into the cart
        assert response.status_code == 302
        response = researcher_web.post("/cart/checkout/", {"accept": "on", "expected_total_minor": "15000",
                                                           "expected_currency": "USD", "payment_method": "invoice",
                                                           "password": "pass-1234567", **USE})
        assert response.status_code == 302
        order = Order.objects.get(buyer=bob)
        assert order.contract.status == Contract.Status.PENDING

        # The admin approves the contract by signing it (password and TOTP code); the worker delivers.
        response = admin_web.post(f"/admin/orders/contract/{order.contract.pk}/approve/", {
            "password": "admin-pass-123", "totp_code": totp_code()})
        assert response.status_code == 302
        response = admin_web.post("/admin/orders/order/", {
            "action": "approve_credit", "_selected_action": [order.pk], "reason": ""})
        assert response.status_code == 302
        delivery = wait_for(lambda: Delivery.objects.filter(order=order, status=Delivery.Status.DONE).first(),
                            what="worker delivery")
        order.refresh_from_db()
        assert order.fulfilment_status == Order.FulfilmentStatus.FULFILLED

    # Download through signed links; every file's sha256 matches the manifest.
    page = researcher_web.get("/workspace/").content.decode()
    links = dict((path, href) for href, path in re.findall(r'<a href="(/workspace/download/[^"]+/)">([^<]+)</a>', page))
    assert "manifest.csv" in links and "certificate.json" in links and len(links) == 15
    manifest = researcher_web.get(links["manifest.csv"])
    assert manifest.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(manifest.streaming_content).decode())))
    assert len(rows) == delivery.total_files == 12
    for row in rows:
        response = researcher_web.get(links[row["path"]])
        data = b"".join(response.streaming_content)
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    # Nobody else can use the researcher's link.
    assert _client_for(alice).get(links["manifest.csv"]).status_code == 404
