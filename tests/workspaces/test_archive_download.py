"""Bob downloads his delivery as one ZIP holding a BagIt bag: whole, per study, per series."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import bagit
import pytest
from django.urls import reverse

import storage
from factories.orders import approve_for_delivery, place_order
from marketplace.grants import grants_remove_all
from marketplace.models import AuditEvent
from workspaces import bag as bag_module
from workspaces.archive import ArchiveError
from workspaces.bag import AccessEndedError
from workspaces.grants import DELIVERY_DOWNLOAD
from workspaces.models import Delivery
from workspaces.services import DELIVERY_DOCUMENTS, delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def delivery(published_dataset, bob, admin_user, dua) -> Delivery:
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery_run(delivery_id=order.delivery.pk)
    delivery = Delivery.objects.select_related("order").get(pk=order.delivery.pk)
    assert delivery.status == Delivery.Status.DONE and delivery.certificate_issued
    return delivery


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


def archive_url(delivery: Delivery, query: str = "") -> str:
    return reverse("delivery_archive", args=[delivery.pk]) + query


def fetch(client, url: str) -> tuple[object, bytes]:  # noqa: ANN001
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    assert response.streaming  # never built in memory
    return response, b"".join(response.streaming_content)


def stored(key: str) -> bytes:
    return b"".join(storage.iter_chunks(key))


def manifest_rows(delivery: Delivery) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in csv.DictReader(io.StringIO(stored(delivery.manifest_key).decode()))}


def unzip_to(data: bytes, target: Path) -> Path:
    """Extract with zipfile after checking every member name stays inside `target`."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            assert not name.startswith("/") and ".." not in name.split("/")
        zf.extractall(target)
    (root,) = list(target.iterdir())
    return root


# ---- the whole delivery ------------------------------------------------------------------
def test_every_member_of_the_zip_matches_the_manifest_byte_for_byte(bob_client, delivery):
    response, data = fetch(bob_client, archive_url(delivery))
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="order-{delivery.order_id}.zip"'
    assert response["Cache-Control"] == "private, no-store"
    root = f"order-{delivery.order_id}"
    manifest = manifest_rows(delivery)
    assert len(manifest) == delivery.files.count() == 6
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        names = set(zf.namelist())
        assert names == ({f"{root}/data/{path}" for path in manifest}
                         | {f"{root}/data/{name}" for name in DELIVERY_DOCUMENTS}
                         | {f"{root}/{tag}" for tag in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt",
                                                        "tagmanifest-sha256.txt")})
        for path, row in manifest.items():
            body = zf.read(f"{root}/data/{path}")
            assert len(body) == int(row["bytes"])
            assert hashlib.sha256(body).hexdigest() == row["sha256"]
        for name in DELIVERY_DOCUMENTS:  # the documents exactly as the workspace holds them
            assert zf.read(f"{root}/data/{name}") == stored(f"{delivery.prefix}/{name}")


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_unzip_tests_the_archive_without_errors(bob_client, delivery, tmp_path):
    _, data = fetch(bob_client, archive_url(delivery))
    (tmp_path / "a.zip").write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(tmp_path / "a.zip")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "No errors detected" in result.stdout, result.stdout + result.stderr


def test_the_unzipped_archive_is_a_valid_bag_with_the_orders_ids(bob_client, delivery, tmp_path):
    _, data = fetch(bob_client, archive_url(delivery))
    root = unzip_to(data, tmp_path)
    bag = bagit.Bag(str(root))
    bag.validate(fast=True)
    bag.validate()  # every checksum
    cli = Path(sys.executable).parent / "bagit.py"  # the command the README gives buyers
    if cli.exists():
        result = subprocess.run([sys.executable, str(cli), "--validate", str(root)], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "is valid" in result.stderr, result.stderr
    certificate = json.loads(stored(f"{delivery.prefix}/certificate.json"))
    payload_bytes = sum(delivery.files.values_list("size_bytes", flat=True)) + sum(
        len(stored(f"{delivery.prefix}/{name}")) for name in DELIVERY_DOCUMENTS)
    assert bag.info["Payload-Oxum"] == f"{payload_bytes}.{6 + len(DELIVERY_DOCUMENTS)}"
    assert bag.info["External-Identifier"] == f"order-{delivery.order_id}"
    assert bag.info["Contract-Id"] == str(certificate["agreement"]["contract_id"]) == str(delivery.order.contract.pk)
    assert bag.info["Certificate-Id"] == certificate["certificate_id"]
    assert bag.info["Source-Organization"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", bag.info["Bagging-Date"])
    assert set(bag.payload_entries()) == {f"data/{p}" for p in manifest_rows(delivery)} | {
        f"data/{n}" for n in DELIVERY_DOCUMENTS}
    # Payload checksums are the delivery's own records, not recomputed from what was sent.
    for path, sha256 in delivery.files.values_list("path", "sha256"):
        assert bag.entries[f"data/{path}"]["sha256"] == sha256
    assert set(bag.tagfile_entries()) == {"bagit.txt", "bag-info.txt", "manifest-sha256.txt"}


def test_full_validation_catches_a_same_size_change_that_fast_validation_misses(bob_client, delivery, tmp_path):
    _, data = fetch(bob_client, archive_url(delivery))
    root = unzip_to(data, tmp_path)
    victim = root / "data" / delivery.files.first().path
    body = bytearray(victim.read_bytes())
    body[-1] ^= 0xFF
    victim.write_bytes(bytes(body))
    bag = bagit.Bag(str(root))
    bag.validate(fast=True)  # counts and sizes only
    with pytest.raises(bagit.BagValidationError):
        bag.validate()


def test_the_manifests_paths_are_the_layout_on_disk_after_unzip(bob_client, delivery, tmp_path):
    _, data = fetch(bob_client, archive_url(delivery))
    payload = unzip_to(data, tmp_path) / "data"
    manifest_on_disk = payload / "manifest.csv"
    rows = list(csv.DictReader(manifest_on_disk.open()))
    for row in rows:  # manifest.csv's paths are relative to its own folder, as in the workspace
        file = payload / row["path"]
        assert file.is_file() and file.stat().st_size == int(row["bytes"])
        assert hashlib.sha256(file.read_bytes()).hexdigest() == row["sha256"]
        assert row["path"] == f'{row["StudyInstanceUID"]}/{row["SeriesInstanceUID"]}/{row["SOPInstanceUID"]}.dcm'
    on_disk = {str(p.relative_to(payload)) for p in payload.rglob("*.dcm")}
    assert on_disk == {row["path"] for row in rows}


def test_the_download_is_audited_once_with_counts_and_no_paths(bob_client, delivery):
    before = AuditEvent.objects.count()
    fetch(bob_client, archive_url(delivery))
    events = list(AuditEvent.objects.order_by("id")[before:])
    assert [e.action for e in events] == ["download.archive"]
    assert events[0].object_id == str(delivery.pk)
    assert events[0].detail == {"order_id": delivery.order_id, "scope": "delivery", "files": 6, "documents": 3}
    text = str(events[0].detail)
    assert not any(part in text for path in delivery.files.values_list("path", flat=True) for part in path.split("/"))


# ---- one study or series -----------------------------------------------------------------
def test_a_study_or_series_archive_holds_only_its_files_and_is_a_valid_bag(bob_client, delivery, tmp_path):
    manifest = manifest_rows(delivery)
    study = next(iter(manifest.values()))["StudyInstanceUID"]
    series = next(iter(manifest.values()))["SeriesInstanceUID"]
    for kind, uid, column in (("study", study, "StudyInstanceUID"), ("series", series, "SeriesInstanceUID")):
        response, data = fetch(bob_client, archive_url(delivery, f"?{kind}={uid}"))
        root = f"order-{delivery.order_id}-{kind}-{uid}"
        assert response["Content-Disposition"] == f'attachment; filename="{root}.zip"'
        bag_root = unzip_to(data, tmp_path / kind)
        assert bag_root.name == root
        bag = bagit.Bag(str(bag_root))
        bag.validate()
        wanted = {p for p, row in manifest.items() if row[column] == uid}
        assert 0 < len(wanted) < len(manifest)  # two studies of one series each
        assert {e for e in bag.payload_entries() if e.endswith(".dcm")} == {f"data/{p}" for p in wanted}
    assert AuditEvent.objects.filter(action="download.archive", detail__scope="series").count() == 1


@pytest.mark.parametrize(("query", "status"), [
    ("?study=9.9.9", 404), ("?series=9.9.9", 404), ("?series=../x", 404), ("?study=" + "1" * 65, 404),
    ("?study=1.2%00", 400),  # a NUL byte is refused before any view runs
])
def test_a_study_or_series_the_delivery_does_not_hold_is_refused(bob_client, delivery, query, status):
    assert bob_client.get(archive_url(delivery, query)).status_code == status
    assert not AuditEvent.objects.filter(action="download.archive").exists()


def test_a_study_delivered_only_to_someone_else_is_404(bob_client, delivery, second_provider_dataset, charlie,
                                                      deliver):
    other = deliver(second_provider_dataset, charlie)
    study, series, _ = other.files.first().path.split("/")
    assert not delivery.files.filter(path__startswith=f"{study}/").exists()
    assert bob_client.get(archive_url(delivery, f"?study={study}")).status_code == 404
    assert bob_client.get(archive_url(delivery, f"?series={series}")).status_code == 404
    bob_study = delivery.files.first().path.split("/")[0]
    assert bob_client.get(archive_url(delivery, f"?study={bob_study}")).status_code == 200


# ---- who may -----------------------------------------------------------------------------
def test_charlie_and_anonymous_get_no_archive_of_bobs_delivery(client, delivery, charlie):
    response = client.get(archive_url(delivery))
    assert response.status_code == 302 and "login" in response["Location"]
    client.force_login(charlie)
    assert client.get(archive_url(delivery)).status_code == 404
    assert "archive-" not in client.get(reverse("workspace")).content.decode()


def test_the_workspace_and_delivery_pages_link_the_archive(bob_client, delivery):
    page = bob_client.get(reverse("workspace")).content.decode()
    assert f'id="archive-{delivery.pk}" href="{archive_url(delivery)}"' in page
    page = bob_client.get(reverse("delivery_files", args=[delivery.pk])).content.decode()
    assert f'id="archive-link" href="{archive_url(delivery)}"' in page
    study = delivery.files.first().path.split("/")[0]
    assert f'href="{archive_url(delivery)}?study={study}"' in page


def test_a_view_only_licence_gets_no_archive_and_no_link(published_dataset, bob, admin_user, dua, bob_client):
    from catalog.licence import LicenceTerms

    terms = LicenceTerms.from_dict({**published_dataset.terms.to_dict(), "access": "view_only"})
    type(published_dataset).objects.filter(pk=published_dataset.pk).update(licence_terms=terms.to_dict())
    published_dataset.refresh_from_db()
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = delivery_run(delivery_id=order.delivery.pk)
    assert delivery.status == Delivery.Status.DONE
    for page in (reverse("workspace"), reverse("delivery_files", args=[delivery.pk])):
        text = bob_client.get(page).content.decode()
        assert "View-only licence" in text and "archive-" not in text and "archive.zip" not in text
    assert bob_client.get(archive_url(delivery)).status_code == 404
    assert not AuditEvent.objects.filter(action="download.archive").exists()


def test_the_stream_stops_when_access_ends_while_it_runs(bob_client, delivery, monkeypatch):
    monkeypatch.setattr(bag_module, "ACCESS_CHECK_EVERY", 2)
    response = bob_client.get(archive_url(delivery))
    chunks = iter(response.streaming_content)
    next(chunks)  # the download started with the grant in place
    grants_remove_all(delivery, [DELIVERY_DOWNLOAD], reason="revoked")
    with pytest.raises(AccessEndedError):
        for _ in chunks:
            pass


def test_a_stored_file_that_lost_bytes_breaks_the_stream_rather_than_the_archive(bob_client, delivery):
    victim = delivery.files.order_by("path").last()
    storage.put(victim.storage_key, io.BytesIO(stored(victim.storage_key)[:-1]))
    response = bob_client.get(archive_url(delivery))
    with pytest.raises(ArchiveError):
        b"".join(response.streaming_content)


# ---- S3 (moto over HTTP), the production backend -----------------------------------------
@pytest.fixture
def s3_storage(s3_server, settings):
    import boto3

    bucket = "marketplace-archive-test"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket, "endpoint_url": s3_server, "access_key": "test", "secret_key": "test",
                "region_name": "us-east-1", "signature_version": "s3v4", "querystring_expire": 300,
                "file_overwrite": True, "default_acl": None,
            },
        },
    }
    return s3_server


def test_an_archive_streams_from_s3_a_chunk_at_a_time_and_validates(s3_storage, bob_client, delivery, tmp_path,
                                                                    monkeypatch):
    from django.core.files.storage import default_storage
    from storages.backends.s3 import S3File

    assert default_storage.exists(delivery.files.first().storage_key)  # the delivery really lives on S3
    # django-storages' file object would download each whole object first: count its uses.
    whole_downloads = []
    original = S3File.file

    def spied(self):  # noqa: ANN001, ANN202
        if self._file is None:
            whole_downloads.append(self.name)
        return original.fget(self)

    monkeypatch.setattr(S3File, "file", property(spied, original.fset))
    monkeypatch.setattr(storage, "CHUNK", 4096)
    response = bob_client.get(archive_url(delivery))
    parts = list(response.streaming_content)
    assert max(len(p) for p in parts) <= 4096
    # certificate.json is read whole on purpose (a few kB, for bag-info.txt); nothing else is.
    assert [name.rsplit("/", 1)[-1] for name in whole_downloads] == ["certificate.json"]
    bag = bagit.Bag(str(unzip_to(b"".join(parts), tmp_path)))
    bag.validate()
    assert len([e for e in bag.payload_entries() if e.endswith(".dcm")]) == 6


# ---- exact length, byte ranges and resumed downloads ---------------------------------------
def ranged(client, url: str, header: str, **extra) -> tuple[object, bytes]:  # noqa: ANN001, ANN003
    response = client.get(url, HTTP_RANGE=header, **extra)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_content_length_is_the_streamed_length_whole_and_per_study_and_series(bob_client, delivery):
    first = delivery.files.order_by("path").first()
    study, series, _ = first.path.split("/")
    for query in ("", f"?study={study}", f"?series={series}", f"?study={study}&series={series}"):
        response, data = fetch(bob_client, archive_url(delivery, query))
        assert int(response["Content-Length"]) == len(data), query
        assert response["Accept-Ranges"] == "bytes" and response["ETag"].startswith('"')
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None


def test_the_archive_is_the_same_bytes_every_time_with_the_same_etag(bob_client, delivery):
    finished = datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
    Delivery.objects.filter(pk=delivery.pk).update(finished=finished)
    one, first = fetch(bob_client, archive_url(delivery))
    two, second = fetch(bob_client, archive_url(delivery))
    assert first == second and one["ETag"] == two["ETag"]
    with zipfile.ZipFile(io.BytesIO(first)) as zf:  # dated by the delivery's end, not by now()
        assert {i.date_time for i in zf.infolist()} == {(2024, 3, 5, 6, 7, 8)}


def _cut_points(data: bytes, root: str) -> dict[str, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    dcm = next(i for n, i in infos.items() if n.endswith(".dcm"))
    data_start = dcm.header_offset + 30 + len(dcm.filename.encode())
    return {
        "in a local header": infos[f"{root}/data/manifest.csv"].header_offset + 11,
        "in a file's data": data_start + dcm.file_size // 2,
        "in a tag file": infos[f"{root}/bag-info.txt"].header_offset + 30 + len(f"{root}/bag-info.txt") + 5,
        "in the central directory": data.index(b"PK\x01\x02") + 60,
        "at the last byte": len(data) - 1,
    }


def test_a_download_cut_anywhere_and_resumed_with_range_is_the_whole_archive(bob_client, delivery, tmp_path):
    response, whole = fetch(bob_client, archive_url(delivery))
    etag, root = response["ETag"], f"order-{delivery.order_id}"
    for where, cut in _cut_points(whole, root).items():
        # the browser kept whole[:cut] of the first attempt and asks for the rest
        resumed, rest = ranged(bob_client, archive_url(delivery), f"bytes={cut}-", HTTP_IF_RANGE=etag)
        assert resumed.status_code == 206, where
        assert resumed["Content-Range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
        assert int(resumed["Content-Length"]) == len(rest) == len(whole) - cut, where
        joined = whole[:cut] + rest
        assert hashlib.sha256(joined).hexdigest() == hashlib.sha256(whole).hexdigest(), where
    with zipfile.ZipFile(io.BytesIO(joined)) as zf:
        assert zf.testzip() is None
        for path, row in manifest_rows(delivery).items():
            assert hashlib.sha256(zf.read(f"{root}/data/{path}")).hexdigest() == row["sha256"]
    bagit.Bag(str(unzip_to(joined, tmp_path))).validate()


def test_middle_and_suffix_ranges_of_a_series_archive(bob_client, delivery):
    series = delivery.files.order_by("path").first().path.split("/")[1]
    url = archive_url(delivery, f"?series={series}")
    _, whole = fetch(bob_client, url)
    for header, expected in ((f"bytes=100-{len(whole) // 2}", whole[100:len(whole) // 2 + 1]),
                             ("bytes=-500", whole[-500:]), (f"bytes=0-{len(whole) + 99}", whole),
                             ("bytes=0-0", whole[:1])):
        response, body = ranged(bob_client, url, header)
        assert response.status_code == 206 and body == expected, header
        assert int(response["Content-Length"]) == len(expected)


def test_if_range_with_a_stale_etag_or_several_ranges_get_the_whole_archive(bob_client, delivery):
    _, whole = fetch(bob_client, archive_url(delivery))
    for extra in ({"HTTP_IF_RANGE": '"stale"'}, {"HTTP_IF_RANGE": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}):
        header = "bytes=100-" if extra else "bytes=0-9,20-29"
        response, body = ranged(bob_client, archive_url(delivery), header, **extra)
        assert response.status_code == 200 and body == whole, extra
        assert int(response["Content-Length"]) == len(whole) and "Content-Range" not in response


def test_a_range_starting_past_the_end_is_416(bob_client, delivery):
    _, whole = fetch(bob_client, archive_url(delivery))
    for header in (f"bytes={len(whole)}-", f"bytes={len(whole) + 10}-{len(whole) + 20}", "bytes=-0"):
        response, _ = ranged(bob_client, archive_url(delivery), header)
        assert response.status_code == 416, header
        assert response["Content-Range"] == f"bytes */{len(whole)}"


def test_the_etag_changes_when_the_deliverys_content_changes(bob_client, delivery):
    before, whole = fetch(bob_client, archive_url(delivery))
    victim = delivery.files.order_by("path").first()
    body = bytearray(stored(victim.storage_key))
    body[-1] ^= 0xFF  # same size, other bytes: a re-delivered file
    storage.put(victim.storage_key, io.BytesIO(bytes(body)))
    type(victim).objects.filter(pk=victim.pk).update(sha256=hashlib.sha256(body).hexdigest(),
                                                     crc32=zlib.crc32(body))
    after, changed = fetch(bob_client, archive_url(delivery))
    assert len(changed) == len(whole) and changed != whole and after["ETag"] != before["ETag"]
    # a resume that names the old version gets the new one whole, never a mix of both
    response, body = ranged(bob_client, archive_url(delivery), "bytes=1000-", HTTP_IF_RANGE=before["ETag"])
    assert response.status_code == 200 and body == changed


def test_a_resume_reads_no_file_before_the_cut(bob_client, delivery, monkeypatch):
    response, whole = fetch(bob_client, archive_url(delivery))
    assert all(delivery.files.values_list("crc32", flat=True))  # stored when the delivery was copied
    cut = _cut_points(whole, f"order-{delivery.order_id}")["in a tag file"]
    opened = []
    original = storage.iter_chunks

    def spied(key: str, start: int = 0):  # noqa: ANN202
        opened.append(key)
        return original(key, start)

    monkeypatch.setattr(storage, "iter_chunks", spied)
    resumed, rest = ranged(bob_client, archive_url(delivery), f"bytes={cut}-", HTTP_IF_RANGE=response["ETag"])
    assert resumed.status_code == 206 and rest == whole[cut:]
    payload = set(delivery.files.values_list("storage_key", flat=True))
    assert not payload & set(opened)  # only the small documents, for manifest-sha256.txt


def test_rows_without_a_crc_get_one_and_a_resume_is_still_exact(bob_client, delivery):
    delivery.files.update(crc32=None)  # rows written before the column existed
    response, whole = fetch(bob_client, archive_url(delivery))
    for key, crc in delivery.files.values_list("storage_key", "crc32"):  # recorded while streaming
        assert crc == zlib.crc32(stored(key))
    delivery.files.update(crc32=None)
    cut = _cut_points(whole, f"order-{delivery.order_id}")["in a file's data"]
    resumed, rest = ranged(bob_client, archive_url(delivery), f"bytes={cut}-", HTTP_IF_RANGE=response["ETag"])
    assert resumed.status_code == 206 and whole[:cut] + rest == whole
    assert None not in set(delivery.files.values_list("crc32", flat=True))


def test_a_range_request_is_audited_once_with_its_range(bob_client, delivery):
    response, whole = fetch(bob_client, archive_url(delivery))
    before = AuditEvent.objects.count()
    ranged(bob_client, archive_url(delivery), "bytes=10-19", HTTP_IF_RANGE=response["ETag"])
    events = list(AuditEvent.objects.order_by("id")[before:])
    assert [e.action for e in events] == ["download.archive"]
    assert events[0].detail == {"order_id": delivery.order_id, "scope": "delivery", "files": 6, "documents": 3,
                                "range": "10-19"}
    ranged(bob_client, archive_url(delivery), f"bytes={len(whole)}-")  # 416: nothing sent, nothing audited
    assert AuditEvent.objects.count() == before + 1


def test_a_resumed_stream_still_stops_when_access_ends(bob_client, delivery, monkeypatch):
    monkeypatch.setattr(bag_module, "ACCESS_CHECK_EVERY", 2)
    response = bob_client.get(archive_url(delivery), HTTP_RANGE="bytes=10-")
    chunks = iter(response.streaming_content)
    next(chunks)
    grants_remove_all(delivery, [DELIVERY_DOWNLOAD], reason="revoked")
    with pytest.raises(AccessEndedError):
        for _ in chunks:
            pass


def test_an_s3_resume_reads_the_file_it_starts_in_with_a_ranged_get(s3_storage, bob_client, delivery):
    response, whole = fetch(bob_client, archive_url(delivery))
    cut = _cut_points(whole, f"order-{delivery.order_id}")["in a file's data"]
    resumed, rest = ranged(bob_client, archive_url(delivery), f"bytes={cut}-", HTTP_IF_RANGE=response["ETag"])
    assert resumed.status_code == 206 and whole[:cut] + rest == whole
    with zipfile.ZipFile(io.BytesIO(whole[:cut] + rest)) as zf:
        assert zf.testzip() is None
