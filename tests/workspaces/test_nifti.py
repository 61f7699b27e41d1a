"""NIfTI on request: dcm2niix per series in a subprocess, problems reported (also when it
exits 0), sidecars without identifying keys, files listed in the manifest."""
from __future__ import annotations

import csv
import gzip
import io
import json
import struct
from pathlib import Path

import pydicom
import pytest

import storage
from demo.synthetic import fake_patients, generate_study_files
from factories.dicom import ct_files
from factories.orders import approve_for_delivery, place_order
from orders.exceptions import OrderError
from orders.models import Order
from workspaces.fingerprint import fingerprint_uid
from workspaces.models import Delivery
from workspaces.nifti import DROPPED_SIDECAR_KEYS, IDENTIFYING_SIDECAR_KEYS, convert_dir, sidecar_problems
from workspaces.services import delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def _deliver(dataset, buyer, dua, admin_user, fmt: str) -> Delivery:  # noqa: ANN001
    order = approve_for_delivery(place_order(buyer, dataset, dua, delivery_format=fmt), admin_user)
    assert order.delivery_format == fmt
    return delivery_run(delivery_id=Delivery.objects.get(order=order).pk)


def _read(key: str) -> bytes:
    return b"".join(storage.iter_chunks(key))


def _nifti_dims(data: bytes) -> tuple[int, ...]:
    header = gzip.decompress(data)[:348]
    assert struct.unpack("<i", header[:4])[0] == 348  # sizeof_hdr of NIfTI-1
    return struct.unpack("<8h", header[40:56])[1:4]


def _broken_and_good_series() -> list[tuple[str, bytes]]:
    """One study, two series of 5 slices: the first with uneven slice positions."""
    patient = fake_patients(1, seed=21)[0]
    files = generate_study_files(patient=patient, modality="CT", n_series=2, n_instances=5, study_index=0, seed=21)
    out = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        if ds.SeriesNumber == 1:
            z = [0.0, 1.0, 5.0, 6.0, 20.0][int(ds.InstanceNumber) - 1]
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z]
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((name, buffer.getvalue()))
    return out


def test_dicom_and_nifti_delivers_both_and_lists_the_nifti_in_the_manifest(published_dataset, bob, dua, admin_user):
    delivery = _deliver(published_dataset, bob, dua, admin_user, Order.DeliveryFormat.DICOM_NIFTI)
    assert delivery.status == Delivery.Status.DONE
    dicom = list(delivery.files.filter(instance__isnull=False))
    nifti = list(delivery.files.filter(instance__isnull=True).select_related("series"))
    assert len(dicom) == 6 and len(nifti) == 4  # two series: an image and a sidecar each
    assert delivery.done_files == delivery.total_files == 10
    assert delivery.total_bytes == sum(f.size_bytes for f in dicom + nifti)
    assert delivery.converted_series == 2 and not delivery.conversion_problems
    for f in nifti:
        uid = fingerprint_uid(f.series.series_uid, order_id=delivery.order_id)
        assert f.path in (f"nifti/{uid}/{uid}.nii.gz", f"nifti/{uid}/{uid}.json")
        assert storage.sha256_of(f.storage_key) == f.sha256 and storage.size(f.storage_key) == f.size_bytes
        if f.path.endswith(".nii.gz"):
            assert _nifti_dims(_read(f.storage_key)) == (64, 64, 3)
        else:
            sidecar = json.loads(_read(f.storage_key))
            assert sidecar["Modality"] == "CT"
            assert not set(sidecar) & (IDENTIFYING_SIDECAR_KEYS | DROPPED_SIDECAR_KEYS)
            # The cleaned department the DICOM copy keeps is left out of the sidecar, and said so.
            assert "InstitutionalDepartmentName" in delivery.conversion_report[uid]["sidecar_keys_dropped"]
        assert delivery.conversion_report[uid]["status"] == "ok" and f.path in delivery.conversion_report[uid]["files"]
    # The series UID in the NIfTI folder is the one in the buyer's DICOM copies.
    dicom_series = {pydicom.dcmread(io.BytesIO(_read(f.storage_key)), stop_before_pixels=True).SeriesInstanceUID
                    for f in dicom}
    assert dicom_series == {f.path.split("/")[1] for f in nifti}
    rows = list(csv.DictReader(io.StringIO(_read(delivery.manifest_key).decode())))
    listed = {row["path"]: row for row in rows}
    assert len(rows) == 10
    for f in nifti:
        assert listed[f.path]["sha256"] == f.sha256 and listed[f.path]["SOPInstanceUID"] == ""
        assert listed[f.path]["SeriesInstanceUID"] == f.path.split("/")[1]


def test_nifti_only_delivers_no_dicom_file(published_dataset, bob, dua, admin_user):
    delivery = _deliver(published_dataset, bob, dua, admin_user, Order.DeliveryFormat.NIFTI)
    assert delivery.status == Delivery.Status.DONE
    paths = list(delivery.files.values_list("path", flat=True))
    assert len(paths) == 4 and all(p.startswith("nifti/") for p in paths)
    assert not any(p.endswith(".dcm") for p in paths)
    # The certificate covers the instances the NIfTI files were made from.
    certificate = json.loads(_read(f"{delivery.prefix}/certificate.json"))
    assert certificate["totals"]["files"] == certificate["totals"]["verified_clean"] == 6


def test_a_dicom_order_gets_no_nifti(published_dataset, bob, dua, admin_user):
    delivery = _deliver(published_dataset, bob, dua, admin_user, Order.DeliveryFormat.DICOM)
    assert delivery.files.count() == 6 and delivery.conversion_report == {}


def test_a_broken_series_is_reported_and_ships_no_nifti(dataset, ingest, publish, bob, dua, admin_user, client):
    batch = ingest(dataset, _broken_and_good_series())
    assert batch.failed_files == 0
    dataset = publish(dataset)
    delivery = _deliver(dataset, bob, dua, admin_user, Order.DeliveryFormat.DICOM_NIFTI)
    assert delivery.status == Delivery.Status.DONE
    assert delivery.converted_series == 1
    [(uid, problems)] = delivery.conversion_problems
    assert any("Interslice distance varies" in p for p in problems)
    assert not delivery.files.filter(path__startswith=f"nifti/{uid}/").exists()
    assert delivery.files.filter(path__startswith="nifti/").count() == 2  # the good series
    assert delivery.files.filter(path__endswith=".dcm").count() == 10  # every DICOM file still delivered
    client.force_login(bob)
    page = client.get("/workspace/").content.decode()
    assert "NIfTI: 1 of 2 series converted." in page
    assert f"Series {uid} was not converted to NIfTI" in page and "Interslice distance varies" in page


def _series_dir(tmp_path: Path, files: list[tuple[str, bytes]]) -> tuple[Path, Path]:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    for n, (_, data) in enumerate(files):
        (in_dir / f"{n}.dcm").write_bytes(data)
    return in_dir, out_dir


def test_the_sidecar_check_fails_a_series_whose_sidecar_names_the_site(tmp_path):
    # Raw uploads (not de-identified) through the real dcm2niix -ba y: it keeps the
    # institution, station and device serial number, which the check refuses.
    in_dir, out_dir = _series_dir(tmp_path, ct_files(n_patients=1, n_instances=3))
    conversion = convert_dir(in_dir, out_dir, timeout=60)
    text = " ".join(conversion.problems)
    for key in ("InstitutionName", "StationName", "DeviceSerialNumber"):
        assert f"identifying key {key}" in text
    assert sidecar_problems(next(out_dir.glob("*.json")))


def test_a_missing_orientation_is_a_problem_although_dcm2niix_exits_0(tmp_path):
    files = []
    for name, data in ct_files(n_patients=1, n_instances=3):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        for keyword in ("InstitutionName", "StationName", "DeviceSerialNumber", "InstitutionAddress",
                        "InstitutionalDepartmentName"):
            delattr(ds, keyword) if keyword in ds else None
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((name, buffer.getvalue()))
    in_dir, out_dir = _series_dir(tmp_path, files)
    conversion = convert_dir(in_dir, out_dir, timeout=60)
    assert any("Unable to determine spatial orientation" in p for p in conversion.problems)
    assert not any(str(tmp_path) in p for p in conversion.problems)  # our paths are not reported


@pytest.mark.parametrize(("script", "expected"), [
    ("exit 3", "dcm2niix exited with status 3"),
    ("kill -SEGV $$", "dcm2niix was killed by signal 11"),
    ("sleep 30", "dcm2niix did not finish within 1 s"),
])
def test_a_failing_or_hanging_converter_is_a_problem(tmp_path, settings, script, expected):
    # A stand-in for a crashing or hanging dcm2niix (it segfaults on some inputs).
    tool = tmp_path / "dcm2niix"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    settings.DCM2NIIX_PATH = str(tool)
    in_dir, out_dir = _series_dir(tmp_path, [])
    conversion = convert_dir(in_dir, out_dir, timeout=1)
    assert conversion.problems[0] == expected


def test_checkout_refuses_an_unknown_delivery_format(published_dataset, bob, dua):
    with pytest.raises(OrderError) as caught:
        place_order(bob, published_dataset, dua, delivery_format="png")
    assert caught.value.code == "delivery_format"


def test_the_cart_page_offers_the_delivery_formats(published_dataset, bob, client):
    from orders.cart import cart_add

    cart_add(buyer=bob, dataset=published_dataset, criteria={})
    client.force_login(bob)
    page = client.get("/cart/").content.decode()
    for value in ("dicom", "dicom+nifti", "nifti"):
        assert f'name="delivery_format" value="{value}"' in page
