"""The de-identification certificate: written with every delivery (JSON signed by the
platform, and a PDF), once; downloadable by the buyer, a dataset's own for its provider,
and checkable by anyone on a public page."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import re

import pydicom
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

import storage
from catalog.models import Instance
from factories.dicom import ct_files
from factories.orders import approve_for_delivery, place_order
from test_no_phi_anywhere import leaks, planted_values
from workspaces.certificate import (
    CERTIFICATE_JSON_NAME,
    CERTIFICATE_PDF_NAME,
    certificate_canonical,
    certificate_check,
    certificate_for_dataset,
    certificate_pdf,
    certificate_verify,
)
from workspaces.models import Delivery
from workspaces.services import (
    DELIVERY_DOCUMENTS,
    deliveries_recover_stuck,
    delivery_document_key,
    delivery_run,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

LINK = re.compile(r'<a href="(/workspace/download/[^"/]+/)">([^<]+)</a>')
# ct_files: plain CT, nothing masked; deid's default options (ingestion's deid_options).
EXPECTED_CODES = ["113100", "113107", "113108", "113105"]


def _deliver(dataset, buyer, admin_user, dua) -> Delivery:  # noqa: ANN001
    order = approve_for_delivery(place_order(buyer, dataset, dua), admin_user)
    delivery_run(delivery_id=Delivery.objects.get(order=order).pk)
    return Delivery.objects.select_related("order__contract").get(order=order)


@pytest.fixture
def delivery(published_dataset, bob, admin_user, dua) -> Delivery:
    delivery = _deliver(published_dataset, bob, admin_user, dua)
    assert delivery.status == Delivery.Status.DONE
    return delivery


def stored(key: str) -> bytes:
    return b"".join(storage.iter_chunks(key))


def certificate_of(delivery: Delivery) -> dict:
    return json.loads(stored(f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}"))


def pdf_text(pdf: bytes) -> str:
    """The text shown by an uncompressed reportlab PDF: its (...) Tj strings."""
    return " ".join(m.decode("latin-1") for m in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", pdf))


def leaves(data: object, path: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in leaves(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in leaves(v, (*path, i))]
    return [path]


def tampered(data: dict, path: tuple) -> dict:
    changed = copy.deepcopy(data)
    holder = changed
    for step in path[:-1]:
        holder = holder[step]
    value = holder[path[-1]]
    if isinstance(value, bool):
        holder[path[-1]] = not value
    elif isinstance(value, int):
        holder[path[-1]] = value + 1
    elif value is None:
        holder[path[-1]] = 0
    else:
        holder[path[-1]] = str(value) + "x"
    return changed


# ---- the delivered certificate -----------------------------------------------------------
def test_it_writes_the_certificate_beside_the_manifest_with_counts_codes_and_agreement(delivery):
    data = certificate_of(delivery)
    order, contract = delivery.order, delivery.order.contract
    assert data["kind"] == "delivery"
    assert data["order"]["order_id"] == order.pk and data["order"]["delivery_id"] == delivery.pk
    assert data["agreement"] == {"contract_id": contract.pk, "template_version": contract.template_version,
                                 "text_sha256": hashlib.sha256(contract.text.encode()).hexdigest()}
    assert data["manifest"]["sha256"] == hashlib.sha256(stored(delivery.manifest_key)).hexdigest()
    assert data["engine"]["implementation_version"] == "MKTDEID_1"
    assert data["issued"] == delivery.certificate_issued.isoformat().replace("+00:00", "Z")
    assert data["totals"] == {"files": 6, "verified_clean": 6, "pixels_masked": 0}
    (part,) = data["datasets"]
    assert part["dataset_id"] == order.lines.get().dataset_id and part["files"] == 6
    assert [m["code"] for m in part["methods"]] == EXPECTED_CODES
    assert {m["files"] for m in part["methods"]} == {6}
    assert part["options"]["retain_device_identity"] is False
    assert part["options"]["accept_patient_free_text_risk"] == []
    assert stored(f"{delivery.prefix}/{CERTIFICATE_PDF_NAME}").startswith(b"%PDF")


def test_its_codes_are_the_ones_the_engine_wrote_into_every_delivered_file(delivery):
    codes = {m["code"] for m in certificate_of(delivery)["datasets"][0]["methods"]}
    for f in delivery.files.all():
        ds = pydicom.dcmread(io.BytesIO(stored(f.storage_key)), stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        assert {item.CodeValue for item in ds.DeidentificationMethodCodeSequence} == codes


def test_it_counts_only_files_with_a_verification_record_as_verified(delivery):
    from catalog.models import UploadFile

    first = delivery.files.order_by("pk").first()
    UploadFile.objects.filter(instance_id=first.instance_id).update(instance=None)  # record lost
    data = certificate_for_dataset(first.instance.dataset)
    assert data["totals"] == {"files": 6, "verified_clean": 5, "pixels_masked": 0}
    assert {m["files"] for m in data["datasets"][0]["methods"]} == {5}


def test_the_delivered_certificate_verifies(delivery):
    data = certificate_of(delivery)
    assert certificate_verify(data)
    assert certificate_check(data) == (True, "Valid: signed by MedImage Exchange (demo); no field was changed.")


def test_changing_any_field_breaks_the_signature(delivery):
    data = certificate_of(delivery)
    paths = [p for p in leaves(data) if p[0] != "signature"]
    assert len(paths) > 30
    for path in paths:
        assert not certificate_verify(tampered(data, path)), path
    assert not certificate_verify({k: v for k, v in data.items() if k != "manifest"})
    assert not certificate_verify({**data, "note": "added"})
    assert not certificate_verify(tampered(data, ("signature", "value")))


def test_a_rotated_secret_key_still_verifies_while_the_old_one_is_a_fallback(delivery, settings):
    data = certificate_of(delivery)
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    settings.SECRET_KEY_FALLBACKS = []
    assert not certificate_verify(data)
    settings.SECRET_KEY_FALLBACKS = [old]
    assert certificate_verify(data)


def test_the_signature_is_over_the_canonical_json(delivery, settings):
    import hmac

    data = certificate_of(delivery)
    canonical = certificate_canonical(data)
    assert canonical.startswith(b'{"agreement":{') and b'": ' not in canonical and b', "' not in canonical
    assert json.loads(canonical) == {k: v for k, v in data.items() if k != "signature"}
    key = hmac.new(settings.SECRET_KEY.encode(), b"workspaces.certificate.deid-certificate.v1", hashlib.sha256).digest()
    assert data["signature"]["value"] == hmac.new(key, canonical, hashlib.sha256).hexdigest()


def test_the_pdf_carries_the_order_id_and_the_codes(delivery):
    pdf = stored(f"{delivery.prefix}/{CERTIFICATE_PDF_NAME}")
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert f"order #{delivery.order_id}" in text
    assert certificate_of(delivery)["signature"]["value"] in text
    for code in EXPECTED_CODES:
        assert code in text
    assert certificate_pdf(certificate_of(delivery)) == pdf  # invariant: same data, same bytes


def test_the_certificate_holds_no_phi(dataset, ingest, publish, bob, alice, admin_user, dua):
    files = ct_files(seed=13)
    planted = planted_values(files)
    assert planted
    ingest(dataset, files)
    delivery = _deliver(publish(dataset), bob, admin_user, dua)
    for name in (CERTIFICATE_JSON_NAME, CERTIFICATE_PDF_NAME):
        assert leaks(stored(f"{delivery.prefix}/{name}").decode("latin-1"), planted) == [], name
    provider = Client()
    provider.force_login(alice)
    for name in ("dataset_certificate_json", "dataset_certificate_pdf"):
        response = provider.get(reverse(name, args=[dataset.pk]))
        assert leaks(response.content.decode("latin-1"), planted) == [], name


# ---- exactly once --------------------------------------------------------------------------
def test_running_the_delivery_again_writes_no_second_certificate(delivery):
    before = stored(f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}")
    assert delivery_run(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert stored(f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}") == before
    assert json.loads(before)["issued"] == delivery.certificate_issued.isoformat().replace("+00:00", "Z")
    _, top_level = default_storage.listdir(delivery.prefix)
    assert sorted(top_level) == sorted(DELIVERY_DOCUMENTS)


def test_a_worker_killed_while_writing_the_certificate_leaves_it_to_the_resumed_run(
        published_dataset, bob, admin_user, dua, monkeypatch):
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    real_put = storage.put

    def put(key: str, content) -> None:  # noqa: ANN001
        real_put(key, content)
        if key.endswith(CERTIFICATE_JSON_NAME):
            raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(storage, "put", put)
    with pytest.raises(KeyboardInterrupt):
        delivery_run(delivery_id=delivery.pk)
    monkeypatch.setattr(storage, "put", real_put)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RUNNING and delivery.certificate_issued is None
    assert not delivery_document_key(delivery, CERTIFICATE_JSON_NAME)

    Delivery.objects.filter(pk=delivery.pk).update(progressed=None)  # the sweep finds it stuck
    monkeypatch.setattr("workspaces.tasks.delivery_run_task.delay", lambda **kwargs: None)
    assert deliveries_recover_stuck() == {"requeued": 1, "failed": 0}
    delivery = delivery_run(delivery_id=delivery.pk)
    assert delivery.status == Delivery.Status.DONE and delivery.certificate_issued is not None
    data = certificate_of(delivery)
    assert certificate_verify(data) and data["totals"]["files"] == 6
    assert data["issued"] == delivery.certificate_issued.isoformat().replace("+00:00", "Z")
    assert stored(f"{delivery.prefix}/{CERTIFICATE_PDF_NAME}").startswith(b"%PDF")


# ---- the buyer's downloads ------------------------------------------------------------------
def workspace_links(client) -> dict[str, str]:  # noqa: ANN001
    response = client.get(reverse("workspace"))
    assert response.status_code == 200
    return {path: url for url, path in LINK.findall(response.content.decode())}


def test_the_buyer_downloads_both_certificate_files_from_the_workspace(client, bob, delivery):
    client.force_login(bob)
    links = workspace_links(client)
    for name, content_type in ((CERTIFICATE_JSON_NAME, "application/json"), (CERTIFICATE_PDF_NAME, "application/pdf")):
        response = client.get(links[name])
        assert response.status_code == 200 and response["Content-Type"] == content_type
        assert b"".join(response.streaming_content) == stored(f"{delivery.prefix}/{name}")
    page = client.get(reverse("delivery_files", args=[delivery.pk])).content.decode()
    assert {name for _, name in LINK.findall(page)} >= {CERTIFICATE_JSON_NAME, CERTIFICATE_PDF_NAME}


def test_the_buyer_of_another_order_gets_404_for_bobs_certificate(
        client, bob, charlie, delivery, published_dataset, admin_user, dua):
    client.force_login(bob)
    bobs = workspace_links(client)
    charlies_delivery = _deliver(published_dataset, charlie, admin_user, dua)
    client.force_login(charlie)
    charlies = workspace_links(client)
    assert client.get(charlies[CERTIFICATE_JSON_NAME]).status_code == 200
    for name in (CERTIFICATE_JSON_NAME, CERTIFICATE_PDF_NAME):
        assert client.get(bobs[name]).status_code == 404
    assert certificate_of(charlies_delivery)["order"]["order_id"] != delivery.order_id


# ---- the provider's dataset certificate ---------------------------------------------------
def test_a_provider_member_downloads_its_datasets_certificate(client, alice, published_dataset):
    client.force_login(alice)
    response = client.get(reverse("dataset_certificate_json", args=[published_dataset.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = json.loads(response.content)
    assert certificate_verify(data)
    assert data["kind"] == "dataset" and "order" not in data and "manifest" not in data
    (part,) = data["datasets"]
    assert part["dataset_id"] == published_dataset.pk
    assert part["files"] == Instance.objects.filter(dataset=published_dataset).count() == 6
    assert part["verified_clean"] == 6 and [m["code"] for m in part["methods"]] == EXPECTED_CODES
    pdf = client.get(reverse("dataset_certificate_pdf", args=[published_dataset.pk]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert published_dataset.title in pdf_text(pdf.content)
    page = client.get(reverse("dataset_manage", args=[published_dataset.pk])).content.decode()
    assert reverse("dataset_certificate_json", args=[published_dataset.pk]) in page


@pytest.mark.parametrize("who", ["dave", "bob", "charlie"])
def test_anyone_outside_the_provider_gets_404_for_its_dataset_certificate(
        client, published_dataset, second_provider_dataset, who, request):
    from marketplace.models import User

    user = User.objects.get(username="dave") if who == "dave" else request.getfixturevalue(who)
    client.force_login(user)
    for name in ("dataset_certificate_json", "dataset_certificate_pdf"):
        assert client.get(reverse(name, args=[published_dataset.pk])).status_code == 404
    if who == "dave":  # his own dataset's certificate is there
        own = client.get(reverse("dataset_certificate_json", args=[second_provider_dataset.pk]))
        assert own.status_code == 200 and json.loads(own.content)["datasets"][0]["provider"] == "Delta Scans"


# ---- the public check page -----------------------------------------------------------------
def test_the_public_page_answers_valid_for_a_delivered_certificate(delivery):
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.get(reverse("certificate_check")).status_code == 200
    text = stored(f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}").decode()
    page = anonymous.post(reverse("certificate_check"), {"certificate": text})
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-valid="true"' in body and f"#{delivery.order_id}" in body

    upload = io.BytesIO(text.encode())
    upload.name = "certificate.json"
    assert 'data-valid="true"' in anonymous.post(reverse("certificate_check"), {"file": upload}).content.decode()

    answer = anonymous.post(reverse("certificate_check"), text, content_type="application/json")
    assert answer.json()["valid"] is True


def test_the_public_page_answers_invalid_with_the_reason(delivery):
    anonymous = Client()
    data = certificate_of(delivery)
    data["totals"]["verified_clean"] += 1
    cases = [
        (json.dumps(data), "The signature does not match"),
        (json.dumps({k: v for k, v in data.items() if k != "signature"}), "no signature"),
        ("not json {", "not valid JSON"),
        ("[" * 300_000, "too large"),
        ("[1, 2]", "JSON object is expected"),
    ]
    for text, reason in cases:
        body = anonymous.post(reverse("certificate_check"), {"certificate": text}).content.decode()
        assert 'data-valid="false"' in body and reason in body, reason
    answer = anonymous.post(reverse("certificate_check"), json.dumps(data), content_type="application/json")
    assert answer.json() == {"valid": False, "reason": "The signature does not match: the certificate was changed "
                                                      "or was not issued here."}
