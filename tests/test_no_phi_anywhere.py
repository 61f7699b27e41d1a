"""PHI planted in the synthetic uploads never reaches catalog pages, the API, the search
vector, the worker's logs or the delivered files."""
from __future__ import annotations

import io
import logging
import re

import pydicom
import pytest
from django.db import connection
from django.test import Client

import storage
from demo.synthetic import DEMO_SPECS, generate_demo_dataset

IDENTIFYING = ["PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
               "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
               "OperatorsName", "PatientAddress", "PatientTelephoneNumbers", "StudyInstanceUID",
               "SeriesInstanceUID", "SOPInstanceUID", "StationName", "DeviceSerialNumber"]


def planted_values(files: list[tuple[str, bytes]]) -> set[str]:
    """Every identifying value of the inputs, and each name part of 4+ characters."""
    values: set[str] = set()
    for _, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        for keyword in IDENTIFYING:
            value = ds.get(keyword)
            if value is None or value == "":
                continue
            items = value if isinstance(value, pydicom.multival.MultiValue) else [value]
            for item in items:
                text = str(item)
                values.add(text)
                values.update(p for p in re.split(r"[\^ ,]+", text) if len(p) >= 4 and not p.isdigit())
    # Manufacturer words are kept on purpose (buyers filter on them), not PHI.
    return {v for v in values if v.upper() not in {"MEDICAL", "SYSTEMS", "HEALTH", "CENTER", "HOSPITAL"}}


def leaks(text: str, planted: set[str]) -> list[str]:
    """Planted values found as whole tokens (a name inside a random signed token is no leak)."""
    edge = r"A-Za-z0-9_\-."
    return sorted(v for v in planted
                  if re.search(rf"(?<![{edge}]){re.escape(v)}(?![{edge}])", text, flags=re.IGNORECASE))


@pytest.mark.django_db
def test_planted_phi_reaches_no_page_api_index_log_or_delivered_file(
        dataset, ingest, publish, deliver, alice, bob, caplog, tiny_threshold):
    spec = dict(DEMO_SPECS[0], n_patients=3)
    files = generate_demo_dataset(spec, seed=5)
    planted = planted_values(files)
    assert len(planted) > 20  # the corpus really carries PHI
    assert len(leaks(files[0][1].decode("latin-1"), planted)) > 5  # and the detector sees it in raw files

    with caplog.at_level(logging.DEBUG):
        batch = ingest(dataset, files, as_zip=True)
        assert batch.failed_files == 0
        dataset = publish(dataset)
        delivery = deliver(dataset, bob)
        order = delivery.order
    assert leaks(caplog.text, planted) == []

    researcher, provider = Client(), Client()
    researcher.force_login(bob)
    provider.force_login(alice)
    pages = [
        researcher.get("/datasets/"), researcher.get("/datasets/", {"q": "chest"}),
        researcher.get(f"/datasets/{dataset.pk}/"), researcher.get(f"/datasets/{dataset.pk}/order/"),
        researcher.get("/api/datasets/"), researcher.get(f"/api/datasets/{dataset.pk}/"),
        researcher.get("/workspace/"), researcher.get(f"/orders/{order.pk}/"),
        provider.get(f"/provider/datasets/{dataset.pk}/"), provider.get(f"/provider/uploads/{batch.pk}/"),
        provider.get("/provider/"), provider.get(f"/provider/datasets/{dataset.pk}/deid-certificate.json"),
    ]
    for response in pages:
        assert response.status_code == 200
        assert leaks(response.content.decode(), planted) == [], response.request["PATH_INFO"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT search_vector::text FROM catalog_dataset WHERE id = %s", [dataset.pk])
        assert leaks(cursor.fetchone()[0], planted) == []

    for f in delivery.files.all():
        data = b"".join(storage.iter_chunks(f.storage_key)).decode("latin-1")
        assert leaks(data, planted) == [], f.path
    for name in ("certificate.json", "certificate.pdf"):
        data = b"".join(storage.iter_chunks(f"{delivery.prefix}/{name}")).decode("latin-1")
        assert leaks(data, planted) == [], name
