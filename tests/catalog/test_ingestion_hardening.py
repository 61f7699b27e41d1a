"""Ingestion under hostile input and crashes: damaged zip members, undecodable pixels, a
worker killed mid-batch, stuck batches, failed batches and their retry. Every batch ends
in a visible state with a reason, counts are exact, and no file, member or patient name
reaches a log line."""
from __future__ import annotations

import io
import logging
import struct
import textwrap
import zipfile
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from django.utils import timezone
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless

import storage
from catalog.ingestion.ingest import upload_batch_ingest
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import Dataset, Instance, UploadBatch, UploadFile
from factories.dicom import ct_files
from tests.catalog.test_ingestion import stored_quarantine_files

pytestmark = pytest.mark.django_db

PATIENT = "NGUYEN^PAUL"


class Killed(BaseException):
    """A worker killed mid-task: no `except Exception` handler runs."""


# ---- hostile zips, built here ------------------------------------------------------------
def named(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Give files names that carry an MRN and a patient name, as providers' exports do."""
    return [(f"MRN46736{i}_{PATIENT}/IM{i:04}.dcm", data) for i, (_, data) in enumerate(files)]


def stored_zip(files: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_STORED) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return bytearray(buffer.getvalue())


def _infos(data: bytearray) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        return archive.infolist()


def flip_data_byte(data: bytearray, member: int) -> bytearray:
    """Bad CRC: change one byte of a member's stored data (its listing stays valid)."""
    info = _infos(data)[member]
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 200] ^= 0xFF
    return data


def lie_about_size(data: bytearray, member: int, delta: int) -> bytearray:
    """Patch the member's uncompressed size in its local header and central directory."""
    info = _infos(data)[member]
    struct.pack_into("<I", data, info.header_offset + 22, info.file_size + delta)
    central = -1
    for _ in range(member + 1):
        central = data.index(b"PK\x01\x02", central + 1)
    struct.pack_into("<I", data, central + 24, info.file_size + delta)
    return data


def assert_no_names_logged(caplog: pytest.LogCaptureFixture, names: list[str]) -> None:
    text = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records).upper()
    words = {PATIENT, "NGUYEN", "MRN46736"} | {n.upper() for n in names}
    words |= {part.upper() for n in names for part in n.split("/")}
    assert caplog.records, "the test should have logged something to check"
    assert sorted(w for w in words if w in text) == []


def run_task(batch_id: int) -> None:
    from catalog.tasks import upload_batch_ingest_task

    upload_batch_ingest_task(batch_id=batch_id)  # the task body, as a worker runs it


HOSTILE = {
    "bad-crc-stored": (lambda z: flip_data_byte(z, 1), zipfile.ZIP_STORED,
                       "zip member 2: its data is damaged (CRC check failed)"),
    "bad-data-deflated": (lambda z: flip_data_byte(z, 1), zipfile.ZIP_DEFLATED, "zip member 2: "),
    "size-lie-larger": (lambda z: lie_about_size(z, 1, +1000), zipfile.ZIP_STORED,
                        "zip member 2: its header declares"),
    "size-lie-smaller": (lambda z: lie_about_size(z, 1, -1000), zipfile.ZIP_STORED,
                         "zip member 2: its data is damaged (CRC check failed)"),
}


# Old code: BadZipFile escaped the task (batch "running" forever, name in the traceback),
# and a size lie was ingested as a silently truncated file.
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_damaged_zip_member_is_rejected_alone_and_the_rest_of_the_batch_goes_on(dataset, alice, caplog, kind):
    caplog.set_level(logging.DEBUG)
    damage, compression, reason = HOSTILE[kind]
    files = named(ct_files(n_patients=1, n_instances=3))
    archive = bytes(damage(stored_zip(files, compression=compression)))
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(f"MRN467367_{PATIENT}.zip", io.BytesIO(archive))])

    run_task(batch.pk)

    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.done_files, batch.ok_files, batch.failed_files) == (3, 3, 2, 1)
    bad = batch.files.get(status=UploadFile.Status.REJECTED)
    assert bad.reason.startswith(reason), bad.reason
    assert "MRN" not in bad.reason and "NGUYEN" not in bad.reason
    assert bad.name == files[1][0]  # kept for the provider, who must find and fix it
    assert Instance.objects.filter(dataset=dataset).count() == 2
    assert stored_quarantine_files(dataset) == []
    assert_no_names_logged(caplog, [name for name, _ in files])


# ---- every failure ends visibly; retry ---------------------------------------------------
# Old code: the error escaped the task, the batch stayed "Ingesting" and there was no retry.
def test_an_unexpected_error_fails_the_batch_with_a_reason_and_a_retry_finishes_it_once(
        dataset, alice, caplog, monkeypatch, django_capture_on_commit_callbacks):
    from catalog.ingestion import ingest as ingestion
    from catalog.ingestion.upload_batches import upload_batch_retry

    caplog.set_level(logging.DEBUG)
    files = named(ct_files(n_patients=1, n_instances=4))
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(name, io.BytesIO(data)) for name, data in files])
    real, calls = ingestion._catalogue, []

    def flaky(upload, *args, **kwargs):
        calls.append(upload.pk)
        if len(calls) == 3:
            raise OSError(f"storage unavailable for {files[2][0]}")  # a message quoting the name
        return real(upload, *args, **kwargs)

    monkeypatch.setattr(ingestion, "_catalogue", flaky)
    run_task(batch.pk)

    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.FAILED
    assert batch.error.startswith("ingestion stopped by an internal error")
    assert (batch.done_files, batch.ok_files, batch.failed_files, batch.total_files) == (2, 2, 0, 4)
    pending = batch.files.filter(status=UploadFile.Status.PENDING)
    assert pending.count() == 2
    assert all(f.reason.startswith("not processed: ") for f in pending)
    # Kept for the retention period so the retry can use them; nothing else is.
    assert sorted(stored_quarantine_files(dataset)) == sorted(pending.values_list("quarantine_key", flat=True))
    assert batch.can_retry()
    assert_no_names_logged(caplog, [name for name, _ in files])

    monkeypatch.setattr(ingestion, "_catalogue", real)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        upload_batch_retry(batch=batch, acting_user=alice)
        upload_batch_retry(batch=batch, acting_user=alice)  # a second click: nothing more
    assert len(queued) == 1
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.QUEUED and batch.error == ""
    run_task(batch.pk)
    run_task(batch.pk)  # a duplicate delivery of the task: nothing more

    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.done_files, batch.ok_files, batch.failed_files) == (4, 4, 4, 0)
    assert batch.files.count() == 4
    assert set(batch.files.values_list("status", flat=True)) == {UploadFile.Status.OK}
    assert Instance.objects.filter(dataset=dataset).count() == 4
    assert stored_quarantine_files(dataset) == []
    assert list(batch.status_changes.values_list("old_status", "new_status")) == [
        ("queued", "running"), ("running", "failed"), ("failed", "queued"), ("queued", "running"),
        ("running", "done")]


def test_only_a_failed_batch_within_its_retention_can_be_retried(dataset, alice, settings):
    from catalog.exceptions import CatalogError
    from catalog.ingestion.upload_batches import upload_batch_fail, upload_batch_retry, upload_batches_purge_failed

    done = upload_batch_ingest(batch_id=upload_batch_create(
        dataset=dataset, acting_user=alice, files=[(n, io.BytesIO(d)) for n, d in ct_files(1, 1)]).pk)
    with pytest.raises(CatalogError, match="Only a failed upload can be retried"):
        upload_batch_retry(batch=done, acting_user=alice)

    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in named(ct_files(1, 2, seed=5))])
    upload_batch_fail(batch_id=batch.pk, reason="test stop")
    assert stored_quarantine_files(dataset)  # kept for a retry
    later = timezone.now() + timedelta(hours=settings.INGEST_FAILED_RETENTION_HOURS, minutes=1)
    assert upload_batches_purge_failed(now=later) == [batch.pk]
    assert upload_batches_purge_failed(now=later) == []
    assert stored_quarantine_files(dataset) == []
    batch.refresh_from_db()
    assert (batch.status, batch.failed_files, batch.total_files) == (UploadBatch.Status.FAILED, 2, 2)
    assert set(batch.files.values_list("status", flat=True)) == {UploadFile.Status.REJECTED}
    assert "upload this file again" in batch.files.first().reason
    with pytest.raises(CatalogError, match="files were removed; upload them again"):
        upload_batch_retry(batch=batch, acting_user=alice)


def test_the_batch_page_shows_the_reason_and_a_retry_button_to_the_provider_only(
        client, dataset, alice, charlie, django_capture_on_commit_callbacks):
    from catalog.ingestion.upload_batches import upload_batch_fail

    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in ct_files(1, 1)])
    upload_batch_fail(batch_id=batch.pk, reason="ingestion stopped by an internal error (reference upload 1)")
    client.force_login(alice)
    page = client.get(f"/provider/uploads/{batch.pk}/").content.decode()
    assert "This upload stopped: ingestion stopped by an internal error" in page
    assert 'id="retry-upload"' in page

    client.force_login(charlie)
    assert client.post(f"/provider/uploads/{batch.pk}/retry/").status_code == 404
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.FAILED

    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(f"/provider/uploads/{batch.pk}/retry/")
    assert response.status_code == 302 and len(queued) == 1
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.QUEUED
    assert 'id="retry-upload"' not in client.get(f"/provider/uploads/{batch.pk}/").content.decode()


# ---- a worker killed mid-batch: exact counts on the re-run --------------------------------
def _kill_on_call(monkeypatch: pytest.MonkeyPatch, target: object, name: str, after: int) -> None:
    real, calls = getattr(target, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == after:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, dying)


# Old code (kill during expansion): the re-run expanded the zip again: 6 files became 15
# rows, three "already in dataset" and a file with no bytes rejected as an internal error.
# Old code (kill after an instance was stored): the re-run called that file a duplicate.
@pytest.mark.parametrize("kill_at, after", [
    ("put", 4),      # storage.put: while expanding the zip (6 member puts come first)
    ("put", 9),      # storage.put: while cataloguing (clean objects)
    ("delete", 3),   # storage.delete: just after a file's instance was stored
], ids=["expanding", "cataloguing", "after-an-instance"])
def test_a_batch_killed_mid_way_and_run_again_has_exact_counts_and_no_duplicate_rows(
        dataset, alice, monkeypatch, caplog, kill_at, after):
    caplog.set_level(logging.DEBUG)
    files = named(ct_files(n_patients=2, n_instances=3))
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[("export.zip", io.BytesIO(bytes(stored_zip(files, compression=zipfile.ZIP_DEFLATED))))])
    with monkeypatch.context() as patch:
        _kill_on_call(patch, storage, kill_at, after)
        with pytest.raises(Killed):
            upload_batch_ingest(batch_id=batch.pk)
    assert UploadBatch.objects.get(pk=batch.pk).status == UploadBatch.Status.RUNNING

    run_task(batch.pk)  # the task re-delivered after the worker died (acks_late)

    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.done_files, batch.ok_files, batch.failed_files) == (6, 6, 6, 0)
    members = batch.files.filter(is_archive=False)
    assert members.count() == 6
    assert set(members.values_list("status", flat=True)) == {UploadFile.Status.OK}
    assert sorted(members.values_list("member_index", flat=True)) == list(range(6))
    assert Instance.objects.filter(dataset=dataset).count() == 6
    assert Dataset.objects.get(pk=dataset.pk).instance_count == 6
    assert stored_quarantine_files(dataset) == []
    assert_no_names_logged(caplog, [name for name, _ in files])


def test_a_file_is_never_catalogued_without_being_marked_ingested(dataset, alice, monkeypatch):
    """Killed between the instance row and the file's status: both or neither exist."""
    from django.db.models.signals import post_save

    files = ct_files(n_patients=1, n_instances=3)
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in files])
    seen = []

    def kill_after_second(sender, instance, created, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise Killed

    post_save.connect(kill_after_second, sender=Instance)
    try:
        with pytest.raises(Killed):
            upload_batch_ingest(batch_id=batch.pk)
    finally:
        post_save.disconnect(kill_after_second, sender=Instance)
    assert Instance.objects.filter(dataset=dataset).count() == batch.files.filter(status="ok").count() == 1
    run_task(batch.pk)
    batch.refresh_from_db()
    assert (batch.status, batch.ok_files, batch.failed_files) == (UploadBatch.Status.DONE, 3, 0)
    assert not batch.files.filter(status=UploadFile.Status.DUPLICATE).exists()


def test_a_chunk_run_twice_changes_nothing(dataset, alice, settings, monkeypatch):
    from catalog.ingestion.ingest import upload_files_ingest
    from config.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    settings.INGEST_CHUNK_FILES = 2
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in ct_files(1, 5)])
    ids = list(batch.files.values_list("pk", flat=True))
    upload_batch_ingest(batch_id=batch.pk, parallel=True)
    before = list(batch.files.values_list("pk", "status", "instance_id"))
    assert upload_files_ingest(batch_id=batch.pk, upload_file_ids=ids[:2]) is None  # finished: skipped
    batch.refresh_from_db()
    assert (batch.status, batch.ok_files, batch.total_files) == (UploadBatch.Status.DONE, 5, 5)
    assert list(batch.files.values_list("pk", "status", "instance_id")) == before


# ---- the stuck-batch sweep ---------------------------------------------------------------
def _stuck_batch(dataset: Dataset, alice, monkeypatch: pytest.MonkeyPatch, *, minutes_ago: int) -> UploadBatch:
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in named(ct_files(1, 3, seed=9))])
    with monkeypatch.context() as patch:
        _kill_on_call(patch, storage, "delete", 2)
        with pytest.raises(Killed):
            upload_batch_ingest(batch_id=batch.pk)
    UploadBatch.objects.filter(pk=batch.pk).update(progressed=timezone.now() - timedelta(minutes=minutes_ago))
    return UploadBatch.objects.get(pk=batch.pk)


def test_the_sweep_requeues_a_stuck_batch_and_leaves_a_busy_one_alone(
        dataset, alice, monkeypatch, django_capture_on_commit_callbacks):
    from catalog.ingestion.upload_batches import upload_batches_recover_stuck

    stuck = _stuck_batch(dataset, alice, monkeypatch, minutes_ago=20)
    busy = _stuck_batch(dataset, alice, monkeypatch, minutes_ago=5)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        result = upload_batches_recover_stuck(older_than=timedelta(minutes=15))
    assert (result.requeued, result.failed) == ([stuck.pk], [])
    assert len(queued) == 1
    stuck.refresh_from_db()
    busy.refresh_from_db()
    assert (stuck.status, busy.status) == (UploadBatch.Status.QUEUED, UploadBatch.Status.RUNNING)
    change = stuck.status_changes.last()
    assert (change.old_status, change.new_status) == ("running", "queued")
    assert "no progress for 15 minutes" in change.reason

    run_task(stuck.pk)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.total_files, stuck.ok_files, stuck.failed_files) == ("done", 3, 3, 0)
    assert stuck.files.count() == 3


def test_the_sweep_fails_a_batch_that_keeps_stopping(dataset, alice, monkeypatch, settings):
    from catalog.ingestion.upload_batches import upload_batches_recover_stuck

    settings.INGEST_MAX_ATTEMPTS = 2
    batch = _stuck_batch(dataset, alice, monkeypatch, minutes_ago=30)
    UploadBatch.objects.filter(pk=batch.pk).update(attempts=2)
    result = upload_batches_recover_stuck(older_than=timedelta(minutes=15))
    assert result.failed == [batch.pk]
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.FAILED
    assert batch.error.startswith("ingestion stopped without finishing 2 times")
    assert batch.can_retry()
    assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).failed == []


def test_the_sweep_waits_longer_before_each_further_restart(dataset, alice, monkeypatch):
    from catalog.ingestion.upload_batches import upload_batches_recover_stuck

    batch = _stuck_batch(dataset, alice, monkeypatch, minutes_ago=20)
    UploadBatch.objects.filter(pk=batch.pk).update(attempts=2)  # started twice: waits 30 minutes
    assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).requeued == []
    UploadBatch.objects.filter(pk=batch.pk).update(progressed=timezone.now() - timedelta(minutes=31))
    assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).requeued == [batch.pk]
    assert "no progress for 30 minutes; queued again (start 3 of 3)" in batch.status_changes.last().reason


def test_the_sweep_sends_a_queued_batch_no_worker_took_again(
        dataset, alice, django_capture_on_commit_callbacks):
    """A broker restart loses queued messages: the batch stays queued with no task."""
    from catalog.ingestion.upload_batches import upload_batches_recover_stuck

    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(n, io.BytesIO(d)) for n, d in named(ct_files(1, 2, seed=9))])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).requeued == []
        UploadBatch.objects.filter(pk=batch.pk).update(created=timezone.now() - timedelta(minutes=16))
        assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).requeued == [batch.pk]
        assert upload_batches_recover_stuck(older_than=timedelta(minutes=15)).requeued == []  # not again at once
    assert len(queued) == 1
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.QUEUED and batch.attempts == 0
    run_task(batch.pk)
    run_task(batch.pk)  # the duplicate does nothing
    batch.refresh_from_db()
    assert (batch.status, batch.ok_files, batch.attempts) == ("done", 2, 1)


def test_the_recovery_task_is_a_thin_wrapper(dataset, alice, monkeypatch):
    from catalog.tasks import upload_batches_recover_stuck_task

    batch = _stuck_batch(dataset, alice, monkeypatch, minutes_ago=60 * 24)
    assert upload_batches_recover_stuck_task()["requeued"] == [batch.pk]


# ---- pixel data must decode ---------------------------------------------------------------
def _one_ct(seed: int = 13) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(ct_files(n_patients=1, n_instances=1, seed=seed)[0][1]))


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _garbage_jpeg2000(ds: pydicom.Dataset, *, frames: int = 1) -> pydicom.Dataset:
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream " * 8])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _short_native(ds: pydicom.Dataset) -> pydicom.Dataset:
    ds.PixelData = ds.PixelData[:-128]
    return ds


# Old code ingested (and would have published) all three.
@pytest.mark.parametrize("make, reason", [
    (_short_native, "pixel data is damaged: it holds 8064 bytes but 64 x 64 pixels"),
    (lambda ds: _garbage_jpeg2000(ds), "pixel data could not be decoded"),
    (lambda ds: _garbage_jpeg2000(ds, frames=2), "pixel data is damaged: the offset table lists 1 frames, the header 2"),
], ids=["native-too-short", "undecodable-jpeg2000", "frame-count-mismatch"])
def test_an_image_whose_pixels_cannot_be_decoded_is_rejected_with_the_problem_named(dataset, ingest, make, reason):
    good = ct_files(n_patients=1, n_instances=2)
    batch = ingest(dataset, [*good, ("bad.dcm", _bytes(make(_one_ct())))])
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.ok_files, batch.failed_files) == (2, 1)
    bad = batch.files.get(status=UploadFile.Status.REJECTED)
    assert bad.reason.startswith(reason), bad.reason
    assert "NGUYEN" not in bad.reason.upper()
    assert Instance.objects.filter(dataset=dataset).count() == 2


def test_a_well_formed_compressed_image_is_decoded_and_ingested(dataset, ingest):
    ds = _one_ct()
    ds.compress(RLELossless)
    batch = ingest(dataset, [("rle.dcm", _bytes(ds))])
    assert batch.files.get().status == UploadFile.Status.OK, batch.files.get().reason


HANGING_DECODER = textwrap.dedent("""
    import time

    def hangs(payload):
        time.sleep(120)
        yield None
""")


def test_a_decoder_that_hangs_is_stopped_by_the_time_limit(dataset, ingest, settings, monkeypatch, tmp_path: Path):
    import time

    from deid import pixels

    (tmp_path / "hanging_px_decoder.py").write_text(HANGING_DECODER)
    monkeypatch.syspath_prepend(str(tmp_path))  # passed on to the child's PYTHONPATH
    monkeypatch.setattr(pixels, "DECODER", "hanging_px_decoder:hangs")
    settings.INGEST_DECODE_TIMEOUT_SECONDS = 2
    started = time.monotonic()
    batch = ingest(dataset, [("loops.dcm", _bytes(_garbage_jpeg2000(_one_ct())))])
    assert time.monotonic() - started < 30
    rejected = batch.files.get()
    assert rejected.status == UploadFile.Status.REJECTED
    assert rejected.reason == "pixel data could not be decoded: decoding timed out"
    assert batch.status == UploadBatch.Status.DONE
